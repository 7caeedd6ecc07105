// Drives one run from registration to succeeded with a client generated from the API description:
// the types come from openapi-typescript (generated/ledger-api.d.ts, made by the contract test and never
// committed), the calls from openapi-fetch. `tsc` type-checks it against the description before it runs.
// Usage: LEDGER_URL=... LEDGER_ADMIN_KEY=... LEDGER_WORKER_KEY=... LEDGER_READ_KEY=... node out/drive-run.js
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/ledger-api.js";

type WorkerEvent = components["schemas"]["WorkerEvent"];
// The one thing of Node's this program uses (no @types/node needed).
declare const process: { env: Record<string, string | undefined> };

function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const ledger = createClient<paths>({ baseUrl: setting("LEDGER_URL") });
const bearer = (key: string) => ({ Authorization: `Bearer ${key}` });
const admin = bearer(setting("LEDGER_ADMIN_KEY"));

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(what);
}

const runId = `ts-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
const registered = await ledger.POST("/api/runs", {
  headers: admin,
  body: { runId, requiredScores: ["accuracy"], requiredOutputs: ["predictions"], expectedItems: 100, leaseSeconds: 300 },
});
check(registered.response.status === 201 && registered.data !== undefined, `register answered ${registered.response.status}`);
check(registered.data.status === "registered", `registered as ${registered.data.status}`);

const claimed = await ledger.POST("/api/runs/{id}/claim", {
  params: { path: { id: runId } },
  headers: bearer(setting("LEDGER_WORKER_KEY")),
  body: { worker: "ts-worker" },
});
check(claimed.data !== undefined, `claim answered ${claimed.response.status}`);
const worker = bearer(claimed.data.leaseToken);

const at = new Date().toISOString();
const events: WorkerEvent[] = [
  { type: "run.started", eventId: "t1", occurredAt: at },
  { type: "step.started", eventId: "t2", occurredAt: at, stepId: "score", name: "Scoring" },
  { type: "heartbeat", eventId: "t3", occurredAt: at },
  { type: "items.committed", eventId: "t4", occurredAt: at, chunkId: "chunk-1", count: 100 },
  { type: "step.completed", eventId: "t5", occurredAt: at, stepId: "score", outcome: "ok" },
  { type: "scores.reported", eventId: "t6", occurredAt: at, scores: { accuracy: 0.93 } },
  { type: "run.completed", eventId: "t7", occurredAt: at, itemsTotal: 100 },
];
const mixed = await ledger.POST("/api/runs/{id}/events", { params: { path: { id: runId } }, headers: worker, body: events });
check(mixed.data !== undefined, `events answered ${mixed.response.status}: ${JSON.stringify(mixed.error)}`);
check(mixed.data.status === "running", `after the array the run is ${mixed.data.status}`);
check(mixed.data.results.every((r) => r.result === "applied"), JSON.stringify(mixed.data.results));

const output = await ledger.POST("/api/runs/{id}/events", {
  params: { path: { id: runId } },
  headers: worker,
  body: { type: "output.recorded", eventId: "t8", occurredAt: at, name: "predictions", uri: "s3://bucket/ts/predictions.csv", bytes: 1234 },
});
check(output.data?.status === "succeeded", `after the output the run is ${output.data?.status}`);

const read = await ledger.GET("/api/runs/{id}", { params: { path: { id: runId } }, headers: bearer(setting("LEDGER_READ_KEY")) });
check(read.data !== undefined, `GET run answered ${read.response.status}`);
check(read.data.status === "succeeded" && read.data.scores["accuracy"] === 0.93 && read.data.missing.length === 0,
  `the run reads back as ${JSON.stringify(read.data)}`);

// A refusal is typed too: problem details with a stable code and retryable.
const late = await ledger.POST("/api/runs/{id}/events", {
  params: { path: { id: runId } },
  headers: worker,
  body: { type: "heartbeat", eventId: "t9", occurredAt: at },
});
check(late.response.status === 409 && late.error?.code === "run-terminal" && late.error.retryable === false,
  `a late event answered ${late.response.status}: ${JSON.stringify(late.error)}`);

console.log(`run ${runId} ${read.data.status}`);
