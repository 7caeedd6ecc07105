#!/usr/bin/env python3
"""Prints what failed in TRX files: each test that did not pass, with its message and stack, and
every error the run itself reported (a class fixture that failed to clean up is one, and counts as
a failure without a failed test). test.sh calls it when a .NET suite fails, so that a CI log says
why, not only how many."""
import sys
import xml.etree.ElementTree as ET

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
MAX_LINES = 60


def text(element):
    return "" if element is None else "".join(element.itertext()).strip()


def clip(block):
    lines = block.splitlines()
    if len(lines) <= MAX_LINES:
        return block
    return "\n".join(lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"])


def report(path):
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        print(f"  (could not read a TRX file: {error})")
        return
    for result in root.iterfind(".//t:UnitTestResult", NS):
        if result.get("outcome") in ("Passed", "NotExecuted"):
            continue
        print(f"  FAILED {result.get('testName')} ({result.get('outcome')})")
        message = text(result.find(".//t:ErrorInfo/t:Message", NS))
        stack = text(result.find(".//t:ErrorInfo/t:StackTrace", NS))
        for block in (message, stack):
            if block:
                print("    " + clip(block).replace("\n", "\n    "))
    for info in root.iterfind(".//t:RunInfos/t:RunInfo", NS):
        if info.get("outcome") in ("Error", "Failed"):
            print("  RUN ERROR " + clip(text(info.find("t:Text", NS))).replace("\n", "\n    "))


def main(paths):
    for path in paths:
        report(path)


if __name__ == "__main__":
    main(sys.argv[1:])
