"""Copy the shared blocks of template.py into algorithm files (between `# ---- shared: <name> ----` markers).

    python tools/sync_shared.py rlpd.py rlif.py       # rewrite those files' shared blocks from template.py
    python tools/sync_shared.py --check *.py           # exit 1 if any file's block differs

A file gets only the blocks it already has markers for (an empty marker pair is filled).
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATTERN = re.compile(r"(# ---- shared: (\w+) ----\n)(.*?)(# ---- end shared ----)", re.S)


def main(argv):
    check = "--check" in argv
    ref = {m.group(2): m.group(3) for m in PATTERN.finditer(open(os.path.join(ROOT, "template.py")).read())}
    bad = []
    for path in (a for a in argv if a != "--check"):
        text = open(path).read()
        new = PATTERN.sub(lambda m: m.group(1) + ref[m.group(2)] + m.group(4), text)
        if new != text:
            bad.append(path)
            if not check:
                open(path, "w").write(new)
    print(("differ: " if check else "updated: ") + (", ".join(bad) or "none"))
    return 1 if check and bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
