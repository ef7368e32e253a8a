"""Known corpora fetched over HTTP(S): `tinyllm data download tinyshakespeare`.

    path = download("tinyshakespeare")              # ./tinyshakespeare.txt, size and SHA-256 checked
    path = download("tinyshakespeare", url="file:///mirror/input.txt")   # a mirror

The file is written atomically (tinyllm.io) only once it is complete and its size and hash are
those recorded here; never more than one byte past the known size is read. Offline, the error
says so and suggests `--data FILE` with a copy obtained another way.

Left out: resumable downloads, archives, datasets from hubs.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinyllm import io
from tinyllm.data import DataError


@dataclass(frozen=True)
class Download:
    url: str
    filename: str
    size: int
    sha256: str


DOWNLOADS = {
    "tinyshakespeare": Download(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        filename="tinyshakespeare.txt", size=1_115_394,
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def download(name: str, out: str | os.PathLike | None = None, url: str | None = None, timeout: float = 60.0,
             opener=None) -> Path:
    """Fetch a known corpus to `out` (default: ./<name>.txt) and check its size and hash.

    `url` overrides the source (a mirror, or a file:// URL); `opener` defaults to
    urllib.request.urlopen. The file appears only when complete and verified.
    """
    if name not in DOWNLOADS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DOWNLOADS))}")
    spec = DOWNLOADS[name]
    out = Path(out) if out is not None else Path(spec.filename)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = url or spec.url
    opener = opener or urllib.request.urlopen
    try:
        with opener(source, timeout=timeout) as response:
            data = response.read(spec.size + 1)   # never more than one byte past the known size
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"could not download {name} from {source} ({reason}); check the network connection, "
                        f"or fetch the file another way and pass it with --data FILE") from None
    if len(data) != spec.size:
        got = f"more than {spec.size:,}" if len(data) > spec.size else f"{len(data):,}"
        raise DataError(f"downloaded {name} from {source} has {got} bytes, expected {spec.size:,}; "
                        "the download was cut short or the file changed: try again")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"downloaded {name} from {source} has sha256 {digest}, expected {spec.sha256}; "
                        "the file is not the expected corpus")
    io.write_bytes(out, data)
    return out
