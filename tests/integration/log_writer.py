"""A process that appends to an audit log in `always` mode and prints each acknowledged seq.

python -m tests.integration.log_writer ROOT PEER_ID SEED_HEX
It appends until killed; the crash test kills it with SIGKILL at random moments.
Logs go to stderr: stdout carries only the protocol the test reads (a kill that tears the
last entry makes the next start log `auditlog_tail_cut`, which once broke that protocol).
"""

import asyncio
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.segments import ChainStore
from bzzz.logs import configure


async def main(root: Path, author: str, seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    log = AuditLog(ChainWriter(ChainStore(root / author, author), "always"), author, key.sign)
    await log.start()
    print("ready", log.writer.head_seq, flush=True)
    n = 0
    while True:
        n += 1
        signed = await log.append("tick", {"n": n, "pad": "x" * 150})
        print(signed.entry.seq, flush=True)


if __name__ == "__main__":
    configure("info", "console", {}, stream=sys.stderr)
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])))
