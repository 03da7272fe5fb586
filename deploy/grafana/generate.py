"""Write obsqc's Grafana dashboards (JSON) from their definitions in ``obsqc_dashboards``.

    python deploy/grafana/generate.py            # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --check    # exit 1 when the committed JSON differs (drift)
    python deploy/grafana/generate.py --out DIR  # write elsewhere

Needs the ``dev`` extras (grafana-foundation-sdk) and obsqc itself (the camera layouts come from the
simulator's focal plane). Files of the output directory that no definition produces are removed, so a
renamed dashboard does not linger.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"

sys.path.insert(0, str(HERE))

from obsqc_dashboards import build_all  # noqa: E402 - after the path to the package is known
from obsqc_dashboards.common import dumps  # noqa: E402


def rendered() -> dict[str, str]:
    """File name -> committed text of every dashboard."""
    return {name: dumps(data) for name, data in build_all().items()}


def drift(out: Path, files: dict[str, str]) -> list[str]:
    """Names of files in ``out`` that differ from ``files``, are missing, or are not produced any more."""
    present = {p.name for p in out.glob("*.json")} if out.is_dir() else set()
    changed = [name for name, text in files.items()
               if name not in present or (out / name).read_text(encoding="utf-8") != text]
    return sorted(changed + sorted(present - set(files)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARDS, help="output directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the files differ")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = drift(args.out, files)
        for name in stale:
            print(f"{args.out / name}: differs from its definition; run python deploy/grafana/generate.py")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in set(p.name for p in args.out.glob("*.json")) - set(files):
        (args.out / stale).unlink()
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
