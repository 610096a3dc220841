// The web page of `imgpipe serve` in headless Chromium, as a person would use it: sign in
// with a token, upload a real JPEG with the web preset, wait for COMPLETE, check the
// thumbnail loaded at 256 px and every download link answers with an image.
//
//   node upload.js URL TOKEN FILE [SCREENSHOT]
//
// Needs playwright-core (NODE_PATH=$IMGPIPE_CACHE/node_modules) and Debian's chromium
// (CHROMIUM, default /usr/bin/chromium). Prints `PASS ...` and exits 0, or `FAIL: ...` and 1.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, token, file, screenshot] = process.argv.slice(2);
if (!url || !token || !file) {
  console.error("usage: node upload.js URL TOKEN FILE [SCREENSHOT]");
  process.exit(2);
}
const STEP_MS = 90_000;

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "imgpipe-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1100, height: 1400 },
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()}`);
    });
    page.setDefaultTimeout(STEP_MS);

    await page.goto(url);
    await page.getByLabel("Bearer token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForFunction(() => document.getElementById("whoami").dataset.user);
    const who = await page.textContent("#whoami");

    await page.waitForSelector("#preset[data-loaded='true']", { state: "attached" });
    await page.getByLabel("Preset").selectOption("web");
    await page.getByLabel("Image file").setInputFiles(file);
    await page.getByRole("button", { name: "Upload" }).click();

    await page.waitForFunction(() =>
      ["COMPLETE", "REJECTED", "FAILED", "ERROR"].includes(
        document.getElementById("status").dataset.status));
    const status = await page.getAttribute("#status", "data-status");
    if (status !== "COMPLETE") {
      throw new Error(`upload ended ${status}: ${await page.textContent("#status")}`);
    }
    const imageId = await page.getAttribute("#result", "data-image-id");

    await page.waitForFunction(() => {
      const img = document.getElementById("thumb");
      return img.complete && img.naturalWidth > 0;
    });
    const thumb = await page.$eval("#thumb", (img) => [img.naturalWidth, img.naturalHeight]);
    if (thumb[0] !== 256 || thumb[1] !== 256) {
      throw new Error(`the thumbnail is ${thumb[0]}x${thumb[1]}, not 256x256`);
    }

    const links = await page.$$eval("#downloads a", (as) => as.map((a) => ({ id: a.id, href: a.href })));
    const names = links.map((l) => l.id).sort();
    const want = ["download-large", "download-medium", "download-thumb"];
    if (JSON.stringify(names) !== JSON.stringify(want)) {
      throw new Error(`download links ${names.join(", ")}; expected ${want.join(", ")}`);
    }
    for (const link of links) {
      // From the page, as a click would fetch it.
      const answer = await page.evaluate(async (href) => {
        const res = await fetch(href);
        const body = await res.arrayBuffer();
        return { status: res.status, type: res.headers.get("content-type"), bytes: body.byteLength };
      }, link.href);
      if (answer.status !== 200 || !/^image\//.test(answer.type || "") || answer.bytes === 0) {
        throw new Error(`${link.id}: ${JSON.stringify(answer)}`);
      }
    }

    await page.waitForSelector(`#images-list tr[data-image-id='${imageId}']`);
    const listed = await page.textContent(`#images-list tr[data-image-id='${imageId}']`);
    if (!listed.includes("COMPLETE")) {
      throw new Error(`the list shows ${listed}`);
    }
    if (problems.length) throw new Error(problems.join("; "));
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`PASS ${who}: image ${imageId} COMPLETE, thumbnail ${thumb.join("x")}, ${links.length} downloads`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.log(`FAIL: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
