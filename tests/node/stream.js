// A second, independent gRPC client (grpc-js) for tests/test_node_client.py:
// prints one "SEQ SHA256HEX LENGTH" line per ledger so the test can compare
// what Node receives with what the Python client receives.
//
//   node stream.js ADDR START END          StreamRawLedgers [START, END]
//   node stream.js ADDR range START END    GetLedgerRange [START, END), then "LATEST n"
//
// A non-OK status goes to stderr as "STATUS <CODE_NAME> <details>", exit 2.
//
// An API key, when the server requires one, comes from the environment (never
// the command line): STELLAR_LIVE_SOURCE_API_KEY, sent as
// "authorization: Bearer KEY", or as "x-api-key: KEY" when
// STELLAR_LIVE_SOURCE_API_KEY_HEADER=x-api-key.
'use strict';

const crypto = require('crypto');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'raw_ledger_service', 'raw_ledger_service.proto');

function usage() {
  process.stderr.write('usage: node stream.js ADDR START END | node stream.js ADDR range START END\n');
  process.exit(64);
}

const args = process.argv.slice(2);
const isRange = args[1] === 'range';
const [addr, start, end] = isRange ? [args[0], args[2], args[3]] : args;
if (args.length !== (isRange ? 4 : 3) || ![start, end].every((s) => /^\d+$/.test(s))) usage();

// keepCase: the fields are read by their proto names; bytes arrive as Buffers.
const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
const { RawLedgerService } = grpc.loadPackageDefinition(def).raw_ledger_service;
// Real ledgers pass grpc's default 4 MiB receive cap.
const client = new RawLedgerService(addr, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': -1,
});

const codeName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);

function printLedger(l) {
  const xdr = l.ledger_close_meta_xdr;
  const hex = crypto.createHash('sha256').update(xdr).digest('hex');
  process.stdout.write(`${l.sequence} ${hex} ${xdr.length}\n`);
}

function fail(err) {
  process.stderr.write(`STATUS ${codeName(err.code)} ${err.details}\n`);
  process.exitCode = 2;  // not process.exit(): let stdout drain first
}

const metadata = new grpc.Metadata();
const apiKey = process.env.STELLAR_LIVE_SOURCE_API_KEY;
if (apiKey) {
  if (process.env.STELLAR_LIVE_SOURCE_API_KEY_HEADER === 'x-api-key') metadata.set('x-api-key', apiKey);
  else metadata.set('authorization', `Bearer ${apiKey}`);
}

const request = { start_ledger: Number(start), end_ledger: Number(end) };
if (isRange) {
  client.getLedgerRange(request, metadata, (err, resp) => {
    if (err) return fail(err);
    resp.ledgers.forEach(printLedger);
    process.stdout.write(`LATEST ${resp.latest_ledger}\n`);
    client.close();
  });
} else {
  const call = client.streamRawLedgers(request, metadata);
  call.on('data', printLedger);
  call.on('error', fail);
  call.on('end', () => client.close());
}
