#!/usr/bin/env node
// netmgr remote IPAM plugin in Node.js ("nodeipam").
//
// Written as a third party would: it knows nothing of netmgr but the published
// contract, proto/netmgr/plugin/v1/ipam.proto, which it loads at run time with
// @grpc/proto-loader, plus the standard gRPC health service.
//
//   node index.js --plugin-dir /run/netmgr/plugins [--name nodeipam]
//                 [--state /var/lib/nodeipam.json] [--pool 10.150.0.0/16] [--size 24]
//   netmgr network create --ipam-driver nodeipam mynet          # a /24 of 10.150.0.0/16
//   netmgr network create --ipam-driver nodeipam --subnet 10.9.0.0/24 --ip-range 10.9.0.128/25 other
//
// IPv4 only (an IPv6 request fails with INVALID_ARGUMENT). State (pools with
// their reference counts, allocated addresses) lives in memory and, with
// --state, in a JSON file rewritten after every change, so a restarted
// plugin goes on where it stopped.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');
const IPAM_SERVICE = 'netmgr.plugin.v1.Ipam';
const GATEWAY_TYPE = 'com.docker.network.gateway';

function parseArgs(argv) {
  const args = { pluginDir: '/run/netmgr/plugins', name: 'nodeipam', state: '', pool: '10.150.0.0/16', size: 24 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in args) || argv[i + 1] === undefined) {
      console.error(`usage: index.js --plugin-dir DIR --name NAME --state FILE --pool CIDR --size N (bad ${argv[i]})`);
      process.exit(2);
    }
    args[key] = key === 'size' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return args;
}

// -- IPv4 arithmetic on unsigned 32-bit numbers ------------------------------------------

function ipToInt(text) {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

function intToIp(n) {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

function parseCidr(text) {
  const [addr, plen, extra] = String(text).split('/');
  const base = ipToInt(addr || '');
  const bits = Number(plen);
  if (base === null || extra !== undefined || !/^\d+$/.test(plen || '') || bits > 32) return null;
  const size = 2 ** (32 - bits);
  if (base % size !== 0) return null;
  return { base, bits, size, text: `${intToIp(base)}/${bits}` };
}

function inside(net, n) {
  return n >= net.base && n < net.base + net.size;
}

function overlaps(a, b) {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}

// -- the IPAM state -----------------------------------------------------------------------

class Allocator {
  constructor(args) {
    this.args = args;
    this.defaultPool = parseCidr(args.pool);
    if (!this.defaultPool || !(args.size >= this.defaultPool.bits && args.size <= 30)) {
      throw new Error(`bad --pool ${args.pool} / --size ${args.size}`);
    }
    this.pools = {}; // id -> { pool, subPool, refs, addresses: [ints] }
    this.load();
  }

  load() {
    if (!this.args.state || !fs.existsSync(this.args.state)) return;
    this.pools = JSON.parse(fs.readFileSync(this.args.state, 'utf8')).pools || {};
  }

  save() {
    if (!this.args.state) return;
    const tmp = `${this.args.state}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ pools: this.pools }, null, 1));
    fs.renameSync(tmp, this.args.state);
  }

  requestPool(req) {
    if (req.v6 || (req.pool && req.pool.includes(':'))) throw invalid('this IPAM plugin serves IPv4 only');
    if (!req.pool && req.sub_pool) throw invalid('a sub-pool needs a pool');
    let net;
    if (req.pool) {
      net = parseCidr(req.pool);
      if (!net) throw invalid(`invalid pool ${req.pool}`);
    } else {
      net = this.freeDefault();
    }
    let sub = null;
    if (req.sub_pool) {
      sub = parseCidr(req.sub_pool);
      if (!sub || !inside(net, sub.base) || !inside(net, sub.base + sub.size - 1)) {
        throw invalid(`invalid sub-pool ${req.sub_pool} of ${net.text}`);
      }
    }
    const id = `${req.address_space}/${net.text}${sub ? `/${sub.text}` : ''}`;
    const existing = this.pools[id];
    if (existing) {
      existing.refs += 1; // identical requests get the same pool (reference counted)
    } else {
      for (const other of Object.values(this.pools)) {
        if (overlaps(parseCidr(other.pool), net)) {
          throw new GrpcError(grpc.status.ALREADY_EXISTS, `pool ${net.text} overlaps ${other.pool}`);
        }
      }
      this.pools[id] = { pool: net.text, subPool: sub ? sub.text : '', refs: 1, addresses: [] };
    }
    this.save();
    return { pool_id: id, pool: net.text, data: {} };
  }

  freeDefault() {
    const all = this.defaultPool;
    const size = 2 ** (32 - this.args.size);
    for (let base = all.base; base < all.base + all.size; base += size) {
      const candidate = { base, bits: this.args.size, size, text: `${intToIp(base)}/${this.args.size}` };
      if (!Object.values(this.pools).some((p) => overlaps(parseCidr(p.pool), candidate))) return candidate;
    }
    throw new GrpcError(grpc.status.RESOURCE_EXHAUSTED, `no free /${this.args.size} left in ${all.text}`);
  }

  releasePool(req) {
    const entry = this.pools[req.pool_id];
    if (entry) {
      entry.refs -= 1;
      if (entry.refs <= 0) delete this.pools[req.pool_id];
      this.save();
    }
    return {};
  }

  requestAddress(req) {
    const entry = this.pools[req.pool_id];
    if (!entry) throw new GrpcError(grpc.status.NOT_FOUND, `unknown pool ${req.pool_id}`);
    const net = parseCidr(entry.pool);
    const range = entry.subPool ? parseCidr(entry.subPool) : net;
    const taken = new Set(entry.addresses);
    const usable = (n) => net.size <= 2 || (n !== net.base && n !== net.base + net.size - 1);
    let chosen = null;
    if (req.address) {
      const n = ipToInt(req.address);
      if (n === null || !inside(net, n) || !usable(n)) throw invalid(`address ${req.address} is not in ${net.text}`);
      if (taken.has(n)) throw new GrpcError(grpc.status.ALREADY_EXISTS, `address ${req.address} is already in use`);
      chosen = n;
    } else {
      // the gateway comes from the whole pool, endpoints from the sub-pool
      const span = (req.options || {}).RequestAddressType === GATEWAY_TYPE ? net : range;
      for (let n = span.base; n < span.base + span.size; n += 1) {
        if (usable(n) && !taken.has(n)) {
          chosen = n;
          break;
        }
      }
      if (chosen === null) throw new GrpcError(grpc.status.RESOURCE_EXHAUSTED, `no free address in ${span.text}`);
    }
    entry.addresses.push(chosen);
    this.save();
    return { address: `${intToIp(chosen)}/${net.bits}`, data: {} };
  }

  releaseAddress(req) {
    const entry = this.pools[req.pool_id];
    const n = ipToInt(req.address);
    if (entry && n !== null) {
      entry.addresses = entry.addresses.filter((a) => a !== n);
      this.save();
    }
    return {};
  }
}

class GrpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function invalid(message) {
  return new GrpcError(grpc.status.INVALID_ARGUMENT, message);
}

// Adapt a synchronous method to a unary gRPC handler with error statuses.
function unary(fn) {
  return (call, callback) => {
    try {
      callback(null, fn(call.request));
    } catch (err) {
      callback({ code: err.code || grpc.status.INTERNAL, details: err.message });
    }
  };
}

function loadPackage() {
  const opts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
  const ipamDef = protoLoader.loadSync('netmgr/plugin/v1/ipam.proto', { ...opts, includeDirs: [PROTO_ROOT] });
  const healthDef = protoLoader.loadSync(path.join(__dirname, 'health.proto'), opts);
  return {
    ipam: grpc.loadPackageDefinition(ipamDef).netmgr.plugin.v1,
    health: grpc.loadPackageDefinition(healthDef).grpc.health.v1,
  };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const alloc = new Allocator(args);
  const pkg = loadPackage();
  const server = new grpc.Server();
  server.addService(pkg.ipam.Ipam.service, {
    GetCapabilities: unary(() => ({ requires_mac_address: false, description: 'Node.js IPv4 IPAM (nodeipam)' })),
    GetDefaultAddressSpaces: unary(() => ({
      local_default_address_space: 'NodeLocal',
      global_default_address_space: 'NodeGlobal',
    })),
    RequestPool: unary((req) => alloc.requestPool(req)),
    ReleasePool: unary((req) => alloc.releasePool(req)),
    RequestAddress: unary((req) => alloc.requestAddress(req)),
    ReleaseAddress: unary((req) => alloc.releaseAddress(req)),
  });
  const serving = new Set(['', IPAM_SERVICE]);
  server.addService(pkg.health.Health.service, {
    Check: (call, callback) => {
      if (!serving.has(call.request.service)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        return;
      }
      callback(null, { status: 'SERVING' });
    },
  });
  fs.mkdirSync(args.pluginDir, { recursive: true, mode: 0o700 });
  const final = path.join(args.pluginDir, `${args.name}.sock`);
  const temp = path.join(args.pluginDir, `.${args.name}.sock.${process.pid}`);
  fs.rmSync(temp, { force: true });
  server.bindAsync(`unix:${temp}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      console.error(`nodeipam: cannot listen on ${temp}: ${err.message}`);
      process.exit(1);
    }
    fs.renameSync(temp, final); // the socket appears only once it is served
    console.log(`nodeipam: serving ${IPAM_SERVICE} on ${final}`);
  });
  const stop = () => {
    serving.clear();
    fs.rmSync(final, { force: true });
    server.tryShutdown(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
