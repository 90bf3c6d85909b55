// The Synchro server's side of a Redis session store, with the client it uses (redis 2.x),
// written the way synchro-api's lib/redis-session-store.js uses it: createClient(port, host),
// auth(password), SET <id> JSON.stringify(session), GET <id> then JSON.parse.
//
//   node sessions_redis.js write PORT PASSWORD COUNT   -> {"<id>": "<text written>", ...}
//   node sessions_redis.js read PORT PASSWORD < ids.json -> {"<id>": "<text read>" | null, ...}
//
// Run from pytest (tests/test_sessions_node.py) with NODE_PATH pointing at
// .test-servers/node/node_modules.  Any failure: a message on stderr and exit code 1.
'use strict';

const crypto = require('crypto');
const redis = require('redis');

const [mode, port, password, count] = process.argv.slice(2);

function connect() {
  const client = redis.createClient(Number(port), '127.0.0.1');
  client.on('error', (err) => fail('redis error: ' + err));
  if (password) {
    client.auth(password, (err) => { if (err) fail('auth: ' + err); });
  }
  return client;
}

function fail(message) {
  process.stderr.write(message + '\n');
  process.exit(1);
}

function call(client, command, args) {
  return new Promise((resolve, reject) => {
    client[command](...args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

// What an app's session grows into: unicode, numbers JSON.stringify writes in its own way,
// nested objects whose key order is the insertion order, arrays, null, booleans.
function sessionContent(session, i) {
  session.user = { name: 'Zoë ' + i + ' ✓ 😀', tags: ['a', 'é', '"q"', 'back\\slash', 'line\nbreak'] };
  session.counter = i;
  session.ratio = i / 7;
  session.huge = 1e21 + i;
  session.tiny = 5e-7;
  session.negZero = -0;
  session.zKey = true;
  session.aKey = null;
  session.viewModel = { z: [3, 2, 1], a: { nested: { deeper: 'x'.repeat(i % 50) } } };
  return session;
}

async function write() {
  const client = connect();
  const written = {};
  for (let i = 0; i < Number(count); i++) {
    // createSessionRedis: a session is { id: uuid.v4() }, SET id JSON.stringify(session).
    const session = { id: crypto.randomUUID() };
    await call(client, 'set', [session.id, JSON.stringify(session)]);
    // putSessionRedis after the app changed it.
    sessionContent(session, i);
    const text = JSON.stringify(session);
    await call(client, 'set', [session.id, text]);
    written[session.id] = text;
  }
  client.quit();
  return written;
}

async function read() {
  const ids = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const client = connect();
  const found = {};
  for (const id of ids) {
    // getSessionRedis: GET id, JSON.parse(result).
    const text = await call(client, 'get', [id]);
    if (text !== null) {
      const session = JSON.parse(text);
      if (session.id !== id) fail('session ' + id + ' holds id ' + session.id);
    }
    found[id] = text;
  }
  client.quit();
  return found;
}

(mode === 'write' ? write() : mode === 'read' ? read() : Promise.reject(new Error('mode?')))
  .then((out) => process.stdout.write(JSON.stringify(out)))
  .catch((err) => fail(String(err && err.stack || err)));
