// The Synchro server's side of a file session store, as synchro-api's
// lib/file-session-store.js does it: the whole store is JSON.stringify(sessions) written with
// fs.writeFileSync, read at start with JSON.parse(fs.readFileSync(file, 'utf8')) (an empty
// file is no sessions), and a session is sessions[id].
//
//   node sessions_file.js write PATH COUNT  -> {"<id>": "<JSON.stringify(session)>", ...}
//   node sessions_file.js read PATH         -> the same, for every session in the file
'use strict';

const crypto = require('crypto');
const fs = require('fs');

const [mode, file, count] = process.argv.slice(2);

function fail(message) {
  process.stderr.write(message + '\n');
  process.exit(1);
}

function load() {
  const contents = fs.readFileSync(file, 'utf8');
  return contents ? JSON.parse(contents) : {};
}

if (mode === 'write') {
  const sessions = {};
  const out = {};
  for (let i = 0; i < Number(count); i++) {
    const id = crypto.randomUUID();
    sessions[id] = { id: id };  // createSessionAwaitable
    fs.writeFileSync(file, JSON.stringify(sessions), 'utf8');
    const session = JSON.parse(JSON.stringify(sessions[id]));
    session.user = { name: 'Zoë ' + i + ' ✓ 😀', tags: ['é', '"q"', 'line\nbreak'] };
    session.ratio = i / 3;
    session.zKey = i;
    session.aKey = [null, true, { b: 1, a: 2 }];
    sessions[session.id] = session;  // putSessionAwaitable
    out[id] = JSON.stringify(session);
  }
  fs.writeFileSync(file, JSON.stringify(sessions), 'utf8');
  process.stdout.write(JSON.stringify(out));
} else if (mode === 'read') {
  const sessions = load();
  const out = {};
  for (const id of Object.keys(sessions)) {
    const session = sessions[id];  // getSessionAwaitable
    if (!session || session.id !== id) fail('sessions[' + id + '] is not that session');
    out[id] = JSON.stringify(session);
  }
  process.stdout.write(JSON.stringify(out));
} else {
  fail('mode?');
}
