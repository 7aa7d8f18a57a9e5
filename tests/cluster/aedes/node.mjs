// One node of a clustered MQTT broker for the tests: Aedes, with Redis carrying the messages
// between nodes (mqemitter-redis) and the retained messages, sessions and wills
// (aedes-persistence-redis). Every node started on the same Redis is one broker to its clients.
//
//   node node.mjs --redis PORT [--port PORT] [--id NAME] [--heartbeat MS]
//
// Listens on 127.0.0.1 only; --port 0 (the default) takes a free port. Prints
// "listening PORT" on stdout once clients can connect. --heartbeat sets how often the node
// says it is alive: the other nodes publish the wills of a dead node's clients after three
// to four heartbeats without it. SIGTERM or SIGINT close it; SIGKILL is a node's crash.
import net from 'node:net'
import { parseArgs } from 'node:util'
import { Aedes } from 'aedes'
import MQEmitterRedis from 'mqemitter-redis'
import RedisPersistence from 'aedes-persistence-redis'

const { values } = parseArgs({
  options: {
    redis: { type: 'string' },
    port: { type: 'string', default: '0' },
    id: { type: 'string', default: `node-${process.pid}` },
    heartbeat: { type: 'string', default: '1000' }
  }
})
if (!values.redis) {
  console.error('usage: node node.mjs --redis PORT [--port PORT] [--id NAME] [--heartbeat MS]')
  process.exit(2)
}

const redis = { host: '127.0.0.1', port: Number(values.redis) }
const broker = await Aedes.createBroker({
  id: values.id,
  mq: MQEmitterRedis(redis),
  persistence: RedisPersistence(redis),
  heartbeatInterval: Number(values.heartbeat)
})
const server = net.createServer((socket) => {
  // As hand-mqtt's clients do: no 40 ms wait for a delayed ACK on every small packet.
  socket.setNoDelay(true)
  broker.handle(socket)
})
server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})

function close () {
  server.close()
  broker.close(() => process.exit(0))
}
process.on('SIGTERM', close)
process.on('SIGINT', close)
