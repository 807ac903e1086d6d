// The chat page in headless Chromium, driven over the DevTools protocol as a
// person would use it: type a message, watch the streamed reply, give it a
// thumb up, then ask for two replies and pick the second. Saves a screenshot.
//   node chat_page.mjs PAGE_URL WS_DIR CHROMIUM SCREENSHOT.png [MODEL_NAME]
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

const [pageUrl, wsDir, chromium, screenshot, modelName = "tiny"] = process.argv.slice(2);
const WebSocket = createRequire(import.meta.url)(path.resolve(wsDir, "index.js"));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rlhf-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`, "--window-size=1100,820", "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = Date.now() + 90_000;
const timeout = setTimeout(() => { console.error("timed out"); browser.kill("SIGKILL"); process.exit(2); }, 120_000);

try {
  // DevTools prints its address on stderr.
  const devtools = await new Promise((resolve, reject) => {
    let err = "";
    browser.stderr.on("data", (d) => {
      err += d;
      const m = err.match(/DevTools listening on (ws:\/\/[^\s]+)/);
      if (m) resolve(new URL(m[1]));
    });
    browser.on("exit", (code) => reject(new Error(`chromium exited (${code}): ${err}`)));
  });
  const target = await (await fetch(`http://${devtools.host}/json/new?${encodeURI(pageUrl)}`, { method: "PUT" })).json();
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false });
  await new Promise((r, j) => { ws.once("open", r); ws.once("error", j); });
  let nextId = 1;
  const waiting = new Map();
  ws.on("message", (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id && waiting.has(msg.id)) {
      const { resolve, reject } = waiting.get(msg.id);
      waiting.delete(msg.id);
      msg.error ? reject(new Error(JSON.stringify(msg.error))) : resolve(msg.result);
    }
  });
  const send = (method, params = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, method, params }));
  });
  const evaluate = async (expression) => {
    const r = await send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) throw new Error(`${expression}: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  };
  const until = async (expression, what) => {
    while (Date.now() < deadline) {
      // While the page is still loading an expression may throw: try again.
      if (await evaluate(expression).catch(() => false)) return;
      await sleep(100);
    }
    throw new Error(`waited too long for ${what}`);
  };
  // A real click: mouse down and up at the element's centre.
  const click = async (selector) => {
    const box = await evaluate(`(() => { const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
      return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()`);
    for (const type of ["mousePressed", "mouseReleased"]) {
      await send("Input.dispatchMouseEvent", { type, x: box.x, y: box.y, button: "left", clickCount: 1 });
    }
  };
  const type = async (text) => {
    await evaluate(`document.getElementById("message").focus()`);
    await send("Input.insertText", { text });
  };

  await send("Page.enable");
  await send("Runtime.enable");
  await until(`location.href === ${JSON.stringify(pageUrl)} && document.readyState === "complete" &&
               document.getElementById("model").textContent !== "…"`, "the page");
  assert.equal(await evaluate(`document.getElementById("model").textContent`), modelName);

  // One reply, streamed, then a thumb up.
  await type("Hi, my order #12345 has not arrived yet.");
  await click("#send");
  await until(`document.querySelectorAll(".reply[data-done='1']").length === 1`, "the first reply");
  const reply = await evaluate(`document.querySelector(".reply .text").textContent`);
  assert.ok(reply.length > 0, "the reply is empty");
  await click(".reply .thumb-up");
  await until(`document.querySelector(".reply .thumb-up").classList.contains("on")`, "the thumb to be saved");

  // Two replies; the second is better.
  await click("#two");
  await type("Can you refund it instead?");
  await click("#send");
  await until(`document.querySelectorAll(".reply[data-done='1']").length === 3`, "two more replies");
  await click(".replies:last-of-type .reply[data-choice='1'] .prefer");
  await until(`document.querySelector(".replies:last-of-type .reply[data-choice='1']").classList.contains("chosen")`,
              "the choice to be saved");
  assert.match(await evaluate(`document.getElementById("status").textContent`), /saved/);

  const shot = await send("Page.captureScreenshot", { format: "png" });
  fs.writeFileSync(screenshot, Buffer.from(shot.data, "base64"));
  console.log(`chat page checks passed; screenshot in ${screenshot}`);
  ws.close();
} finally {
  clearTimeout(timeout);
  const exited = new Promise((r) => (browser.exitCode !== null ? r() : browser.once("exit", r)));
  browser.kill("SIGKILL");
  await exited;
  try {
    fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  } catch (e) {
    console.error(`left ${profile}: ${e.message}`);
  }
}
