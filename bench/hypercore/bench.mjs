// The reference run of bench/auditlog.py: the same workload on hypercore.
//   node bench.mjs COUNT ENTRY_BYTES
// Prints one JSON line: appends/s one at a time (each awaited), appends/s in batches, and
// entries/s verified by replicating into a second core (signatures and Merkle proofs).
import Hypercore from 'hypercore'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const count = Number(process.argv[2] || 10000)
const size = Number(process.argv[3] || 200)
const BATCH = 100
const root = mkdtempSync(join(tmpdir(), 'bzzz-hypercore-'))

function entry (n) {
  return Buffer.from(JSON.stringify({ n, pad: 'x'.repeat(size) }).slice(0, size))
}

async function timed (fn) {
  const start = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - start) / 1e9
}

try {
  const single = new Hypercore(join(root, 'single'))
  await single.ready()
  const singleS = await timed(async () => {
    for (let n = 0; n < count; n++) await single.append(entry(n))
  })

  const batched = new Hypercore(join(root, 'batched'))
  await batched.ready()
  const batchedS = await timed(async () => {
    for (let n = 0; n < count; n += BATCH) {
      const group = []
      for (let i = n; i < Math.min(n + BATCH, count); i++) group.push(entry(i))
      await batched.append(group)
    }
  })

  const clone = new Hypercore(join(root, 'clone'), single.key)
  await clone.ready()
  const a = single.replicate(true)
  const b = clone.replicate(false)
  a.pipe(b).pipe(a)
  const verifyS = await timed(async () => {
    await clone.download({ start: 0, end: count }).done()
  })

  process.stdout.write(JSON.stringify({
    count,
    size,
    append_single_per_s: count / singleS,
    append_batched_per_s: count / batchedS,
    verify_replicate_per_s: count / verifyS
  }) + '\n')
  await single.close(); await batched.close(); await clone.close()
} finally {
  rmSync(root, { recursive: true, force: true })
}
process.exit(0)
