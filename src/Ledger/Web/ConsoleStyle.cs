namespace Ledger.Web;

/// <summary>The console's one stylesheet, served from the ledger (the CSP allows no inline style).</summary>
public static class ConsoleStyle
{
    public const string Css = """
        :root { color-scheme: light; --fg: #1b1f24; --muted: #59636e; --line: #d0d7de; --bg: #fff; --band: #f6f8fa; --accent: #0b57d0; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
        header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1.25rem; padding: .6rem 1rem; background: #13233a; color: #fff; }
        header a { color: #fff; }
        .brand { font-weight: 700; text-decoration: none; }
        nav[aria-label=Console] { display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
        .sign-out { margin-left: auto; display: flex; gap: .5rem; align-items: center; }
        main { padding: 1rem; max-width: 1400px; margin: 0 auto; }
        h1 { font-size: 1.5rem; margin: .25rem 0 1rem; overflow-wrap: anywhere; }
        h2 { font-size: 1.2rem; margin-top: 1.75rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
        h3 { font-size: 1rem; margin-top: 1.25rem; }
        a { color: var(--accent); }
        a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, summary:focus-visible { outline: 3px solid #f0a000; outline-offset: 2px; }
        label { display: block; font-weight: 600; font-size: .85rem; margin-bottom: .15rem; }
        input, select, textarea, button { font: inherit; padding: .35rem .5rem; border: 1px solid #8c959f; border-radius: 4px; max-width: 100%; }
        button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
        header button { background: transparent; border-color: #fff; }
        .filters { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .75rem; align-items: end; background: var(--band); padding: .75rem; border-radius: 6px; }
        .filters input, .filters select { width: 100%; }
        .sign-in, .action { display: grid; gap: .5rem; max-width: 28rem; }
        .inline { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; }
        .table { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
        th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { background: var(--band); font-size: .85rem; }
        table.small { width: auto; min-width: 50%; }
        .wrap { overflow-wrap: anywhere; min-width: 8rem; }
        td { overflow-wrap: break-word; }
        .status, td:first-child a { white-space: nowrap; }
        pre { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 40rem; margin: .25rem 0; font-size: .8rem; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
        dl.facts dt { font-weight: 600; color: var(--muted); }
        dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        .status { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: .85rem; background: #e7ecf0; }
        .s-succeeded { background: #d2f4dc; } .s-failed, .s-lost { background: #ffdcd7; } .s-cancelled { background: #eee; }
        .s-running, .s-claimed { background: #dbe9ff; }
        .archived { background: #f3e6c4; margin-left: .25rem; }
        .anomaly { color: #8a1c00; font-weight: 600; }
        .r-recorded-not-applied td, .r-refused td { background: #fff4e0; }
        .detail { color: var(--muted); font-size: .85rem; }
        .error { color: #8a1c00; background: #ffeee9; padding: .5rem .75rem; border-radius: 4px; }
        .notice { background: #e3f5e8; padding: .5rem .75rem; border-radius: 4px; }
        .pager { display: flex; gap: 1rem; margin: .75rem 0; }
        .count, .asof { color: var(--muted); }
        .empty { color: var(--muted); background: var(--band); padding: .6rem .8rem; border-radius: 6px; }
        .empty p { margin: .3rem 0; } .empty ol { margin: .3rem 0; padding-left: 1.4rem; }
        code { font-size: .85rem; background: #eef1f4; padding: 0 .25rem; border-radius: 3px; overflow-wrap: anywhere; }
        table.runs td { overflow-wrap: anywhere; }
        table.runs td:first-child a { white-space: normal; }
        table.runs td[data-label=Status], table.runs td[data-label=Registered] { white-space: nowrap; }
        .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); gap: 1rem; margin: .75rem 0; }
        .charts figure { margin: 0; }
        .charts figcaption { font-weight: 600; margin-bottom: .3rem; }
        svg.chart { display: block; width: 100%; max-width: 480px; height: auto; background: var(--band); border-radius: 4px; }
        svg.chart text { font-size: 11px; fill: var(--muted); }
        svg.chart .axis { stroke: #8c959f; }
        .c-registered { fill: #0b57d0; } .c-succeeded { fill: #2da44e; } .c-failed { fill: #cf222e; } .c-lost { fill: #9a6700; }
        .c-cancelled { fill: #8c959f; } .c-anomalies { fill: #8250df; }
        .legend { margin: .3rem 0 0; }
        .legend .k { display: inline-block; padding: 0 .4rem; border-radius: 3px; color: #fff; font-size: .8rem; }
        .k-succeeded { background: #2da44e; } .k-failed { background: #cf222e; } .k-lost { background: #9a6700; } .k-cancelled { background: #6e7781; }
        @media (max-width: 640px) {
          main { padding: .6rem; } dl.facts { grid-template-columns: 1fr; } dl.facts dd { margin-bottom: .4rem; }
          .sign-out { margin-left: 0; }
          table.runs thead { display: none; }
          table.runs tr { display: block; border-bottom: 1px solid var(--line); padding: .35rem 0; }
          table.runs td { display: grid; grid-template-columns: 8rem 1fr; gap: .5rem; border: 0; padding: .1rem .25rem; }
          table.runs td::before { content: attr(data-label); font-weight: 600; color: var(--muted); font-size: .85rem; }
          table.runs td:empty { display: none; }
        }
        """;
}
