// Runs a state machine definition on aws-local-stepfunctions, an ASL engine written apart from
// ours, with its Task states calling real Lambda functions through the Lambda Invoke API.
//
//   node run.js DEFINITION INVOKE_URL < executions.json > results.json
//
// DEFINITION is a statemachine/*.asl.json file; its ${<Step>FunctionArn} placeholders become
// function ARNs, as SAM's DefinitionSubstitutions make them, whose names are the functions
// `cargo lambda watch` serves. INVOKE_URL is that emulator. executions.json is [{"name", "input"}, ...]: all are
// started at once (so a duplicate pair races as it would on AWS) and each one's outcome is
// printed as {"name", "status": "SUCCEEDED"|"FAILED", "error", "cause", "output", "states"}.
//
// The emulator answers a function error with HTTP 500 and no X-Amz-Function-Error header, so
// the AWS SDK would see a service error and the engine would never learn the function's
// error name. A small proxy in front answers as Lambda does (200, the header, the same body),
// so `errorType` reaches Retry and Catch exactly as on AWS.
//
// Needs aws-local-stepfunctions (pinned by scripts/setup) on NODE_PATH.
'use strict';

const fs = require('node:fs');
const http = require('node:http');

// Node 20 lacks Promise.withResolvers, which the engine's Task state uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const [definitionPath, invokeUrl] = process.argv.slice(2);
if (!definitionPath || !invokeUrl) {
  process.stderr.write('usage: node run.js DEFINITION INVOKE_URL < executions.json\n');
  process.exit(2);
}

// Forwards every request to the emulator, naming the function as it knows it; a 500 carrying
// a function error becomes Lambda's 200 + X-Amz-Function-Error: Unhandled.
// The body is forwarded whole: its length replaces whatever framing the sender used.
function withLength(headers, length) {
  const out = { ...headers, 'content-length': length };
  for (const hop of ['transfer-encoding', 'connection', 'keep-alive']) {
    delete out[hop];
  }
  return out;
}

function startProxy(upstream) {
  const target = new URL(upstream);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = withLength(req.headers, body.length);
      headers.host = target.host;
      const out = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: byName(req.url),
          method: req.method,
          headers,
        },
        (up) => {
          const got = [];
          up.on('data', (c) => got.push(c));
          up.on('end', () => {
            const payload = Buffer.concat(got);
            let functionError = false;
            if (up.statusCode === 500) {
              try {
                functionError = typeof JSON.parse(payload.toString('utf8')).errorType === 'string';
              } catch (e) {
                functionError = false;
              }
            }
            const reply = withLength(up.headers, payload.length);
            if (functionError) {
              reply['x-amz-function-error'] = 'Unhandled';
            }
            res.writeHead(functionError ? 200 : up.statusCode, reply);
            res.end(payload);
          });
        },
      );
      out.on('error', (e) => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: `proxy: ${e.message}` }));
      });
      out.end(body);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function substitute(text) {
  return text.replace(
    /\$\{(\w+)FunctionArn\}/g,
    (_, step) => `arn:aws:lambda:us-east-1:123456789012:function:${step.toLowerCase()}`,
  );
}

// The binary each function of the stack is built from, where the two differ: ResizeLarge is
// Resize's code in a bigger function (template.yaml), and the emulator serves functions by
// binary name only.
const BINARY = { resizelarge: 'resize' };

// Lambda takes a function's name or ARN in the Invoke path; the emulator knows binary names.
function byName(path) {
  const m = /^\/2015-03-31\/functions\/([^/]+)\/invocations(.*)$/.exec(path);
  if (!m) {
    return path;
  }
  const fn = decodeURIComponent(m[1]);
  const fnName = fn.startsWith('arn:') ? fn.split(':')[6] : fn;
  const name = BINARY[fnName] ?? fnName;
  return `/2015-03-31/functions/${encodeURIComponent(name)}/invocations${m[2]}`;
}

async function runOne(StateMachine, definition, { name, input }) {
  const machine = new StateMachine(definition);
  const executionArn = `arn:aws:states:us-east-1:123456789012:execution:imgpipe-image-pipeline:${name}`;
  const execution = machine.run(input, {
    context: {
      Execution: { Id: executionArn, Name: name },
      StateMachine: {
        Id: 'arn:aws:states:us-east-1:123456789012:stateMachine:imgpipe-image-pipeline',
        Name: 'imgpipe-image-pipeline',
      },
    },
  });
  const states = [];
  const logging = (async () => {
    for await (const event of execution.eventLogs) {
      if (event.type === 'StateEntered' && event.index === undefined) {
        states.push(event.state.name);
      }
    }
  })();
  let outcome;
  try {
    const output = await execution.result;
    outcome = { name, status: 'SUCCEEDED', output };
  } catch (e) {
    const cause = e.cause ?? e;
    outcome = { name, status: 'FAILED', error: cause.name, cause: String(cause.message) };
  }
  await logging;
  return { ...outcome, states };
}

async function main() {
  const { StateMachine } = require('aws-local-stepfunctions');
  const proxy = await startProxy(invokeUrl);
  // The engine's Lambda client is the AWS SDK's, configured from the environment.
  process.env.AWS_ENDPOINT_URL_LAMBDA = `http://127.0.0.1:${proxy.address().port}`;
  process.env.AWS_REGION = process.env.AWS_REGION || 'us-east-1';
  process.env.AWS_ACCESS_KEY_ID = process.env.AWS_ACCESS_KEY_ID || 'testing';
  process.env.AWS_SECRET_ACCESS_KEY = process.env.AWS_SECRET_ACCESS_KEY || 'testing';
  const definition = JSON.parse(substitute(fs.readFileSync(definitionPath, 'utf8')));
  const executions = JSON.parse(fs.readFileSync(0, 'utf8'));
  const results = await Promise.all(executions.map((x) => runOne(StateMachine, definition, x)));
  proxy.close();
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
