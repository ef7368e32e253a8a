"""`tinyllm data`: fetch a corpus (`download`) for `tinyllm train --data FILE`.

Left out: dataset hubs; only the corpora listed in tinyllm.data.DOWNLOADS are known.
"""
from __future__ import annotations

import sys

from tinyllm.commands.common import add_command
from tinyllm.download import DOWNLOADS, download

EXAMPLES = """\
tinyllm data download tinyshakespeare                     # writes ./tinyshakespeare.txt
tinyllm data download tinyshakespeare --out data/shakespeare.txt
tinyllm train --data data/shakespeare.txt --out runs/shakespeare"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "data", "fetch training corpora",
                         "Download a known corpus, checking its size and SHA-256.", EXAMPLES)
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = add_command(actions, "download", "download a known corpus",
                        f"Download a corpus: {', '.join(sorted(DOWNLOADS))}.", EXAMPLES)
    fetch.add_argument("name", choices=sorted(DOWNLOADS), help="which corpus")
    fetch.add_argument("--out", default=None, help="file to write (default: ./<name>.txt)")
    fetch.add_argument("--url", default=None, help="download from this URL instead (a mirror, or file://...)")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    fetch.set_defaults(handler=run_download)


def run_download(args) -> int:
    path = download(args.name, out=args.out, url=args.url, timeout=args.timeout)
    print(f"wrote {path} ({DOWNLOADS[args.name].size:,} bytes); train on it with: "
          f"tinyllm train --data {path}", file=sys.stderr)
    return 0
