"""Audit log benchmark: appends/s in `always` and `batch` mode, verify/s, with 200-byte entries,
and the same workload on hypercore 11 in the same run (bench/hypercore, `npm ci` there first).

Run from the repository root:  python -m bench.auditlog [--count 10000]

"one at a time": each append awaited before the next (a caller that needs each entry durable).
"concurrent": all appends issued at once and awaited together (events arriving faster than the
disk: group commit). Hypercore's "one at a time" is `await core.append(x)`; its "batched" is
`await core.append([100 entries])`, which signs one Merkle root per batch, where we sign every
entry. Hypercore does not fsync its appends; `always` does, for each group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bzzz.auditlog import reader
from bzzz.auditlog.log import AuditLog, ChainWriter, FsyncPolicy
from bzzz.auditlog.segments import ChainStore
from bzzz.p2p import Identity, verify

ENTRY_BYTES = 200
HYPERCORE = Path(__file__).parent / "hypercore"


def payload(n: int) -> dict[str, object]:
    # {"n": ..., "pad": "xxx..."} serialises to ENTRY_BYTES.
    return {"n": n, "pad": "x" * (ENTRY_BYTES - len(json.dumps({"n": n, "pad": ""})))}


async def appends_per_s(
    root: Path, identity: Identity, fsync: FsyncPolicy, count: int, concurrent: bool
) -> float:
    author = identity.peer_id
    log = AuditLog(ChainWriter(ChainStore(root / author, author), fsync), author, identity.sign)
    await log.start()
    started = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(log.append("tick", payload(n)) for n in range(count)))
    else:
        for n in range(count):
            await log.append("tick", payload(n))
    elapsed = time.perf_counter() - started
    await log.stop()
    return count / elapsed


def verify_per_s(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    heads, findings = reader.verify(root, verify)
    elapsed = time.perf_counter() - started
    assert not findings, findings
    total = sum(heads.values())
    return total / elapsed, total


def hypercore(count: int) -> dict[str, float] | None:
    if not (HYPERCORE / "node_modules" / "hypercore").exists():
        return None
    result = subprocess.run(
        ["node", "bench.mjs", str(count), str(ENTRY_BYTES)],
        cwd=HYPERCORE,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument(
        "--sequential-always",
        type=int,
        default=2000,
        help="appends for the fsync-each one-at-a-time run (slow by nature)",
    )
    args = parser.parse_args()
    identity = Identity.generate()
    base = Path(tempfile.mkdtemp(prefix="bzzz-bench-log-"))
    try:
        runs = {}
        for name, fsync, count, concurrent in (
            ("always, one at a time", "always", args.sequential_always, False),
            ("always, concurrent", "always", args.count, True),
            ("batch (5 ms), one at a time", "batch", 400, False),
            ("batch (5 ms), concurrent", "batch", args.count, True),
        ):
            root = base / name.replace(" ", "_").replace(",", "")
            runs[name] = asyncio.run(appends_per_s(root, identity, fsync, count, concurrent))
        verified, total = verify_per_s(base / "batch_(5_ms)_concurrent")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    reference = hypercore(args.count)

    rows = [("workload (200-byte entries)", "bzzz", "hypercore 11", "ratio")]
    single = reference["append_single_per_s"] if reference else None
    batched = reference["append_batched_per_s"] if reference else None
    for name, rate in runs.items():
        ref = single if "one at a time" in name else batched
        if name == "batch (5 ms), concurrent" and reference:
            rows.append(
                (
                    f"append: {name}",
                    f"{rate:,.0f}/s",
                    f"{single:,.0f}/s (one at a time)",
                    f"{rate / single:.2f}x",
                )
            )
        rows.append(
            (
                f"append: {name}",
                f"{rate:,.0f}/s",
                f"{ref:,.0f}/s" if ref else "n/a",
                f"{rate / ref:.2f}x" if ref else "",
            )
        )
    ref_verify = reference["verify_replicate_per_s"] if reference else None
    rows.append(
        (
            f"verify ({total} entries, with signatures)",
            f"{verified:,.0f}/s",
            f"{ref_verify:,.0f}/s (replication)" if ref_verify else "n/a",
            f"{verified / ref_verify:.2f}x" if ref_verify else "",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if reference is None:
        print("(hypercore not installed: npm ci --prefix bench/hypercore)")


if __name__ == "__main__":
    main()
