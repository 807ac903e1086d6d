// The official OpenAI Node SDK against `rlhf serve`: chat completions with
// and without streaming, models.list, an error, and n = 2.
//   node openai_sdk.mjs BASE_URL SDK_DIR
import assert from "node:assert/strict";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [baseURL, sdkDir] = process.argv.slice(2);
const { default: OpenAI } = await import(pathToFileURL(path.join(sdkDir, "index.mjs")).href);
const client = new OpenAI({ baseURL, apiKey: "not-needed-on-loopback", maxRetries: 0 });

const models = await client.models.list();
const ids = [];
for await (const m of models) ids.push(m.id);
assert.deepEqual(ids, ["tiny"]);

const messages = [{ role: "system", content: "You are a support agent." }, { role: "user", content: "Where is my order?" }];
const plain = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 16, temperature: 0 });
assert.equal(plain.object, "chat.completion");
assert.equal(plain.choices.length, 1);
assert.equal(plain.choices[0].message.role, "assistant");
assert.ok(["stop", "length"].includes(plain.choices[0].finish_reason));
assert.ok(plain.usage.prompt_tokens > 0 && plain.usage.total_tokens === plain.usage.prompt_tokens + plain.usage.completion_tokens);

const stream = await client.chat.completions.create({
  model: "tiny", messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let streamed = "", finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta?.content) streamed += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
assert.ok(chunks >= 2, `only ${chunks} chunks`);
assert.equal(streamed, plain.choices[0].message.content, "greedy stream differs from the plain reply");
assert.equal(finish, plain.choices[0].finish_reason);
assert.equal(usage.completion_tokens, plain.usage.completion_tokens);

const two = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 8, n: 2, seed: 3 });
assert.equal(two.choices.length, 2);

const legacy = await client.completions.create({ model: "tiny", prompt: "Your order", max_tokens: 4, temperature: 0 });
assert.equal(legacy.object, "text_completion");

await assert.rejects(
  client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], max_tokens: 100000 }),
  (e) => e instanceof OpenAI.BadRequestError && /maximum context length/.test(e.message));
await assert.rejects(
  client.chat.completions.create({ model: "gpt-9", messages }),
  (e) => e instanceof OpenAI.NotFoundError);

console.log("all OpenAI SDK checks passed");
