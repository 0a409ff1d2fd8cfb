// chorusd's OpenAI-compatible HTTP API driven by the official `openai` npm client (issue 15).
// Run by ctest (tests/CMakeLists.txt) with CHORUSD, CHORUS_MKMODEL and CHORUS_MODEL set; node's
// own test runner, offline once `npm ci` has installed the locked client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

const CHORUSD = process.env.CHORUSD;
const MKMODEL = process.env.CHORUS_MKMODEL;
const MODEL = process.env.CHORUS_MODEL;  // stories260K (the embedded model)
const TOKEN = 'test-token-0123456789abcdef';

// One daemon: HTTP and metrics on free ports, auth on, a llama2 chat template (stories260K has
// none), and a second, slower model is not needed: a long sampled request on a random model
// with stories260K's vocabulary gives the disconnect tests a request that is still running
// (sampled, not greedy: a greedy path on a random model may reach the end token in a few
// steps, and which path it takes changes with the kernels' rounding; every sampled draft
// must reach it before the request ends).
class Daemon {
  constructor(dir, model, extra = '') {
    this.dir = dir;
    const config = join(dir, `config-${Math.random().toString(16).slice(2)}.pbtxt`);
    writeFileSync(join(dir, 'tokens'), `${TOKEN}\n`);
    writeFileSync(config, [
      `model_path: "${model}"`, 'listen_address: "127.0.0.1:0"', 'metrics_listen_address: "127.0.0.1:0"',
      'http_listen_address: "127.0.0.1:0"', 'num_threads: 1', 'chat_template: "llama2"',
      `auth_token_path: "${join(dir, 'tokens')}"`, 'drain_timeout_ms: 5000', extra].join('\n'));
    this.proc = spawn(CHORUSD, ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.log = '';
  }
  // Resolves once the HTTP and metrics ports are known.
  ready() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chorusd did not start:\n${this.log}`)), 30000);
      const scan = (chunk) => {
        this.log += chunk.toString();
        const http = this.log.match(/HTTP \(OpenAI API\) on port (\d+)/);
        const metrics = this.log.match(/metrics on port (\d+)/);
        if (http && metrics) {
          clearTimeout(timer);
          this.httpPort = Number(http[1]);
          this.metricsPort = Number(metrics[1]);
          resolve(this);
        }
      };
      this.proc.stdout.on('data', scan);
      this.proc.stderr.on('data', scan);
      this.proc.on('exit', (code) => reject(new Error(`chorusd exited ${code}:\n${this.log}`)));
    });
  }
  client(apiKey = TOKEN) {
    return new OpenAI({ apiKey, baseURL: `http://127.0.0.1:${this.httpPort}/v1`, maxRetries: 0, timeout: 60000 });
  }
  async metric(name) {
    const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.split(' ').pop());
    }
    return sum;
  }
  async stop() {
    if (this.proc.exitCode !== null) return this.proc.exitCode;
    const exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    this.proc.kill('SIGTERM');
    return exited;
  }
}

let dir, daemon, slow, openai, modelId;

before(async () => {
  assert.ok(CHORUSD && MKMODEL && MODEL, 'CHORUSD, CHORUS_MKMODEL and CHORUS_MODEL must be set');
  dir = mkdtempSync(join(tmpdir(), 'chorus-openai-'));
  const slowModel = join(dir, 'slow.gguf');
  execFileSync(MKMODEL, ['--out', slowModel, '--dim', '256', '--layers', '4', '--heads', '4', '--ffn', '768',
    '--vocab-from', MODEL, '--context', '4096', '--seed', '7']);
  daemon = await new Daemon(dir, MODEL).ready();
  slow = await new Daemon(dir, slowModel).ready();
  openai = daemon.client();
  modelId = (await openai.models.list()).data[0].id;
});

after(async () => {
  const codes = await Promise.all([daemon?.stop(), slow?.stop()]);
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(codes, [0, 0], 'both daemons drain and exit 0');
});

test('models: the served model is listed and retrievable', async () => {
  const list = await openai.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, 'model');
  const one = await openai.models.retrieve(modelId);
  assert.equal(one.id, modelId);
});

test('completions: text, finish_reason and usage', async () => {
  const r = await openai.completions.create({ model: modelId, prompt: 'Once upon a time', max_tokens: 16, seed: 3 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.ok(r.choices[0].text.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  // The same seed gives the same text (sampling is seeded per request).
  const again = await openai.completions.create({ model: modelId, prompt: 'Once upon a time', max_tokens: 16, seed: 3 });
  assert.equal(again.choices[0].text, r.choices[0].text);
});

test('chat: an assistant message', async () => {
  const r = await openai.chat.completions.create({
    model: modelId, messages: [{ role: 'system', content: 'Tell a story.' }, { role: 'user', content: 'A cat' }],
    max_completion_tokens: 12, temperature: 0.7, seed: 1,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 12);
});

test('streaming chat: the deltas add up to the unary answer, usage last', async () => {
  const req = { model: modelId, messages: [{ role: 'user', content: 'Lily and the dog' }], max_tokens: 24, temperature: 0 };
  const unary = await openai.chat.completions.create(req);
  const stream = await openai.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = '', role = null, finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      assert.equal(c.index, 0);
      if (c.delta.role) role = c.delta.role;
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks > 2);
  assert.equal(role, 'assistant');
  assert.equal(text, unary.choices[0].message.content);
  assert.equal(finish, unary.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, unary.usage.completion_tokens);
});

test('n=3: three independent choices, unary and streamed', async () => {
  const r = await openai.completions.create({ model: modelId, prompt: 'The sun', max_tokens: 10, n: 3, seed: 11 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  for (const c of r.choices) assert.ok(c.text.length > 0);
  assert.ok(r.usage.completion_tokens > 10 && r.usage.completion_tokens <= 30, 'usage counts every choice');
  const stream = await openai.completions.create({ model: modelId, prompt: 'The sun', max_tokens: 10, n: 3, seed: 11, stream: true });
  const texts = ['', '', ''];
  const finishes = [null, null, null];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes[c.index] = c.finish_reason;
    }
  }
  assert.deepEqual(texts, r.choices.map((c) => c.text), 'the stream carries the same three drafts');
  assert.ok(finishes.every((f) => f === 'stop' || f === 'length'));
});

test('chorus extension: agents merged into one choice, with merge info and drafts', async () => {
  const r = await openai.completions.create({
    model: modelId, prompt: 'Once upon a time', max_tokens: 20, seed: 5,
    chorus: { agents: 4, merge: 'vote', return_drafts: true, latency_budget_ms: 20000 },
  });
  assert.equal(r.choices.length, 1);
  assert.equal(r.chorus.agents, 4);
  assert.equal(r.chorus.merge.strategy, 'vote');
  assert.equal(r.chorus.drafts.length, 4);
  const winner = r.chorus.drafts.find((d) => d.agent === r.chorus.merge.winner);
  assert.equal(r.choices[0].text, winner.text, 'the merged answer is the winning draft');
  assert.equal(r.usage.completion_tokens, r.chorus.drafts.reduce((s, d) => s + d.num_tokens, 0));
  assert.ok(r.chorus.timing.total_ms > 0);
  // Streamed: one merged choice at the end, with the same merge information.
  const stream = await openai.chat.completions.create({
    model: modelId, messages: [{ role: 'user', content: 'Once' }], max_tokens: 8, stream: true,
    chorus: { agents: 3, merge: 'best_logprob' },
  });
  let last = null, content = '';
  for await (const chunk of stream) {
    for (const c of chunk.choices) content += c.delta.content ?? '';
    if (chunk.chorus) last = chunk;
  }
  assert.equal(last.chorus.merge.strategy, 'best_logprob');
  assert.equal(last.choices[0].index, 0);
  assert.ok(content.length > 0);
});

test('errors: OpenAI error objects with the right statuses', async () => {
  await assert.rejects(openai.completions.create({ model: modelId, prompt: 'x', temperature: 'hot' }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    assert.equal(e.type, 'invalid_request_error');
    return true;
  });
  await assert.rejects(openai.completions.create({ model: modelId, prompt: 'x', max_tokens: 100000 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'max_tokens');
    assert.match(e.message, /4096/, 'the message names the limit');
    return true;
  });
  await assert.rejects(openai.completions.create({ model: 'no-such-model', prompt: 'x' }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  await assert.rejects(daemon.client('wrong-token').models.list(), (e) => e instanceof OpenAI.AuthenticationError);
  await assert.rejects(openai.completions.create({ model: modelId, prompt: 'x', chorus: { agents: 2 }, n: 2 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'n');
    return true;
  });
});

// Waits until the slow daemon holds no request and no KV block.
async function idle(d) {
  for (let i = 0; i < 200; i++) {
    if ((await d.metric('chorus_running_requests')) === 0 && (await d.metric('chorus_kv_blocks_used')) === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail('requests still hold KV blocks after the client left');
}

test('disconnect mid-stream cancels the request and frees its KV blocks', async () => {
  const client = slow.client();
  const cancelledBefore = await slow.metric('chorus_requests_total{status="cancelled"}');
  const stream = await client.completions.create({
    model: (await client.models.list()).data[0].id, prompt: 'Once', max_tokens: 4000, n: 2, temperature: 1, seed: 1, stream: true,
  });
  let chunks = 0;
  for await (const chunk of stream) {
    assert.ok(chunk.choices.length > 0);
    if (++chunks === 3) break;  // leaving the loop aborts the HTTP request
  }
  await idle(slow);
  assert.equal(await slow.metric('chorus_requests_total{status="cancelled"}'), cancelledBefore + 1);
});

test('a unary client that hangs up cancels its request too', async () => {
  const client = slow.client();
  const cancelledBefore = await slow.metric('chorus_requests_total{status="cancelled"}');
  const controller = new AbortController();
  const call = client.completions.create(
    { model: (await client.models.list()).data[0].id, prompt: 'Once', max_tokens: 4000, n: 4, temperature: 1, seed: 1 },
    { signal: controller.signal });
  setTimeout(() => controller.abort(), 150);
  await assert.rejects(call, (e) => e instanceof OpenAI.APIUserAbortError);
  await idle(slow);
  assert.equal(await slow.metric('chorus_requests_total{status="cancelled"}'), cancelledBefore + 1);
});
