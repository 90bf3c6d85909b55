// Reads a module store the way the Synchro server does (synchro-api's FileModuleStore and
// PkgCloudModuleStore, written anew here): the app containers are those whose package.json
// has engines.synchro; an app's modules are its .js files outside node_modules; store files
// (apps.json) come from the folder's root, or from the configRoot container.
//
// usage: node synchro_modules.js '<json: {"service": "file", "directory": ...} or
//        {"service": "pkgcloud", "client": {pkgcloud options}, "configRoot": ...}>' [storeFile]
// prints {"apps": {container: {module: md5hex}}, "storeFile": text or null}
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const md5 = (buf) => crypto.createHash('md5').update(buf).digest('hex');
const removeBOM = (text) => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
const isSynchroApp = (def) => !!(def && def.engines && def.engines['synchro']);

function fileStore(dir, storeFile) {
  const apps = {};
  for (const name of fs.readdirSync(dir)) {
    const folder = path.resolve(dir, name);
    if (!fs.statSync(folder).isDirectory()) continue;
    const pkg = path.resolve(folder, 'package.json');
    if (!fs.existsSync(pkg)) continue;
    if (!isSynchroApp(JSON.parse(removeBOM(fs.readFileSync(pkg, 'utf8'))))) continue;
    const modules = {};
    const walk = (d) => {
      for (const f of fs.readdirSync(d)) {
        if (path.basename(f) === 'node_modules') continue;
        const full = path.resolve(d, f);
        if (fs.statSync(full).isDirectory()) walk(full);
        else if (path.extname(full) === '.js') {
          modules[full.substring(folder.length + 1)] = md5(fs.readFileSync(full));
        }
      }
    };
    walk(folder);
    apps[name] = modules;
  }
  let text = null;
  try { text = removeBOM(fs.readFileSync(path.resolve(dir, storeFile), 'utf8')); } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  return Promise.resolve({apps, storeFile: text});
}

function pkgcloudStore(options, configRoot, storeFile) {
  const pkgcloud = require('pkgcloud');
  const client = pkgcloud.storage.createClient(options);
  const call = (fn, ...args) => new Promise((resolve, reject) =>
    fn.call(client, ...args, (err, ...res) => (err ? reject(err) : resolve(res[0]))));
  // pkgcloud's download callback is not called by every provider: the stream's end is used.
  const download = (container, remote) => new Promise((resolve, reject) => {
    const chunks = [];
    let failed = false;
    const stream = client.download({container, remote}, (err) => {
      if (err) { failed = true; err.statusCode === 404 ? resolve(null) : reject(err); }
    });
    stream.on('data', (c) => chunks.push(c));
    stream.on('error', (e) => { if (!failed) reject(e); });
    stream.on('end', () => { if (!failed) resolve(Buffer.concat(chunks)); });
  });
  const exists = async (container, remote) => {
    try { return !!(await call(client.getFile, container, remote)); } catch (e) {
      if (e.statusCode === 404) return false;
      throw e;
    }
  };
  return (async () => {
    const apps = {};
    for (const c of await call(client.getContainers)) {
      if (!(await exists(c.name, 'package.json'))) continue;
      const def = JSON.parse(removeBOM((await download(c.name, 'package.json')).toString('utf8')));
      if (!isSynchroApp(def)) continue;
      let files = await call(client.getFiles, c.name);
      if (files.length && Array.isArray(files[0])) files = files[0];
      const modules = {};
      for (const f of files.map((x) => x.name)) {
        if (!f || f.indexOf('node_modules/') === 0 || path.extname(f) !== '.js') continue;
        modules[f] = md5(await download(c.name, f));
      }
      apps[c.name] = modules;
    }
    const raw = configRoot ? await download(configRoot, storeFile) : null;
    return {apps, storeFile: raw === null ? null : removeBOM(raw.toString('utf8'))};
  })();
}

const spec = JSON.parse(process.argv[2]);
const storeFile = process.argv[3] || 'apps.json';
const done = spec.service === 'file'
  ? fileStore(spec.directory, storeFile)
  : pkgcloudStore(spec.client, spec.configRoot, storeFile);
done.then((out) => { process.stdout.write(JSON.stringify(out)); process.exit(0); },
  (err) => { process.stderr.write(String(err && err.stack || err) + '\n'); process.exit(1); });
