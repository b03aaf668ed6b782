// A js-libp2p peer driven by the interop tests: JSON commands on stdin, JSON events on stdout.
//
//   node peer.mjs --listen /ip4/127.0.0.1/tcp/0 [--mdns _bzzz-peer-discovery._udp.local] [--bench]
//
// Commands: {"cmd": "dial", "addr": "/ip4/.../p2p/..."}
//           {"cmd": "publish", "topic": "...", "data": "<utf-8 text>"}
//           {"cmd": "stats"}   (with --bench: {"event": "stats", "received", "delays_ms"})
//           {"cmd": "stop"}
// --bench (the reference of bench/pubsub.py): messages are counted, and the delay of each from
// its JSON "timestamp" kept (the last 1,024, as a bzzz node keeps them), instead of one event each.
// Events:   {"event": "ready", "peerId", "addrs"}   {"event": "message", "topic", "from", "data"}
//           {"event": "discovered", "peerId", "addrs"}   {"event": "connected", "peerId"}
//           {"event": "dialed", "peerId"}   {"event": "published", "topic", "recipients"}
//           {"event": "error", "message"}

// Node 20 lacks Promise.withResolvers, which a dependency of libp2p 2.x uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { gossipsub } = await import('@chainsafe/libp2p-gossipsub')
const { identify } = await import('@libp2p/identify')
const { mdns } = await import('@libp2p/mdns')
const { multiaddr } = await import('@multiformats/multiaddr')
const readline = await import('node:readline')

const TOPICS = ['bzzz/coordination/v1', 'antennae/meta-discussion/v1']

function option (name, fallback) {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : fallback
}

function emit (event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

const serviceTag = option('--mdns', null)
const node = await createLibp2p({
  addresses: { listen: [option('--listen', '/ip4/127.0.0.1/tcp/0')] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: serviceTag ? [mdns({ serviceTag, interval: 1000 })] : [],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      globalSignaturePolicy: 'StrictSign',
      allowPublishToZeroTopicPeers: true,
      emitSelf: false
    })
  }
})

node.addEventListener('peer:discovery', (evt) => {
  emit({ event: 'discovered', peerId: evt.detail.id.toString(), addrs: evt.detail.multiaddrs.map(String) })
})
node.addEventListener('peer:connect', (evt) => {
  emit({ event: 'connected', peerId: evt.detail.toString() })
})
const bench = process.argv.includes('--bench')
// Milliseconds since the epoch of an ISO 8601 time, to the microsecond (Date.parse stops at ms).
function epochMs (iso) {
  const fraction = /\.(\d+)/.exec(iso)
  return Date.parse(iso) + (fraction ? (Number('0.' + fraction[1]) * 1000) % 1 : 0)
}
let received = 0
const delays = []
node.services.pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  if (bench) {
    received += 1
    try {
      const sent = epochMs(JSON.parse(new TextDecoder().decode(msg.data)).timestamp)
      if (!Number.isNaN(sent)) {
        delays.push(performance.timeOrigin + performance.now() - sent)
        if (delays.length > 1024) delays.shift()
      }
    } catch (err) {}
    return
  }
  emit({
    event: 'message',
    topic: msg.topic,
    from: msg.type === 'signed' ? msg.from.toString() : null,
    data: new TextDecoder().decode(msg.data)
  })
})
for (const topic of TOPICS) {
  node.services.pubsub.subscribe(topic)
}

emit({ event: 'ready', peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  let command
  try {
    command = JSON.parse(line)
    if (command.cmd === 'dial') {
      const connection = await node.dial(multiaddr(command.addr))
      emit({ event: 'dialed', peerId: connection.remotePeer.toString() })
    } else if (command.cmd === 'publish') {
      const result = await node.services.pubsub.publish(command.topic, new TextEncoder().encode(command.data))
      emit({ event: 'published', topic: command.topic, recipients: result.recipients.map(String) })
    } else if (command.cmd === 'stats') {
      emit({ event: 'stats', received, delays_ms: delays.slice() })
    } else if (command.cmd === 'stop') {
      break
    }
  } catch (err) {
    emit({ event: 'error', message: String(err && err.stack ? err.stack : err), command })
  }
}
await node.stop()
process.exit(0)
