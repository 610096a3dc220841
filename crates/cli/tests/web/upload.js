// The web page of `imgpipe serve` in headless Chromium, as a person would use it: sign in
// with a token; drop two photos at once (tag "beach") and watch both upload with progress and
// reach COMPLETE; upload a third alone through the file chooser (tag "city"); see thumbnails
// in the gallery; filter by tag and find the one; open it, check every rendition previews and
// downloads, make 1x/2x signed links from the links panel and load them without a token,
// delete it; then check a 390 px wide phone screen has no horizontal scroll.
//
//   node upload.js URL TOKEN PHOTO1 PHOTO2 PHOTO3 SHOTS_DIR
//
// Needs playwright-core (NODE_PATH=$IMGPIPE_CACHE/node_modules) and Debian's chromium
// (CHROMIUM, default /usr/bin/chromium). Writes desktop.jpg and phone.jpg into SHOTS_DIR.
// Prints `PASS ...` and exits 0, or `FAIL: ...` and 1.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, token, photo1, photo2, photo3, shots] = process.argv.slice(2);
if (!url || !token || !photo1 || !photo2 || !photo3 || !shots) {
  console.error("usage: node upload.js URL TOKEN PHOTO1 PHOTO2 PHOTO3 SHOTS_DIR");
  process.exit(2);
}
const STEP_MS = 90_000;

// Drops files on the drop zone as a person dragging them from a file manager would.
async function dropFiles(page, files) {
  const payload = files.map((f) => ({
    name: path.basename(f),
    data: fs.readFileSync(f).toString("base64"),
  }));
  await page.evaluate((items) => {
    const transfer = new DataTransfer();
    for (const item of items) {
      const bytes = Uint8Array.from(atob(item.data), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], item.name, { type: "image/jpeg" }));
    }
    const zone = document.getElementById("drop");
    for (const type of ["dragenter", "dragover", "drop"]) {
      zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
    }
  }, payload);
}

// Waits until the upload rows for `names` are final; returns {name: {status, progress, id}}.
async function uploadsDone(page, names) {
  await page.waitForFunction((want) => {
    const rows = Array.from(document.querySelectorAll("#uploads li"));
    return want.every((n) => rows.some((r) => r.querySelector(".name").textContent === n &&
      ["COMPLETE", "REJECTED", "FAILED", "ERROR"].includes(r.dataset.status)));
  }, names);
  return page.evaluate((want) => {
    const out = {};
    for (const r of document.querySelectorAll("#uploads li")) {
      const name = r.querySelector(".name").textContent;
      if (want.includes(name)) {
        out[name] = {
          status: r.dataset.status,
          progress: r.querySelector("progress").value,
          id: r.dataset.imageId,
          message: r.querySelector(".message").textContent,
        };
      }
    }
    return out;
  }, names);
}

async function thumbnailLoaded(page, id) {
  await page.waitForFunction((imageId) => {
    const img = document.querySelector(`.card[data-image-id="${imageId}"] img.thumb`);
    return img && img.complete && img.naturalWidth > 0;
  }, id);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "imgpipe-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1200, height: 900 },
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !/404 \(Not Found\)/.test(m.text())) {
        problems.push(`console error: ${m.text()}`);
      }
    });
    page.setDefaultTimeout(STEP_MS);

    await page.goto(url);
    await page.getByLabel("Bearer token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForFunction(() => document.getElementById("whoami").dataset.user);
    const who = await page.textContent("#whoami");
    if (await page.isVisible("#token")) throw new Error("the token box stays after sign-in");

    await page.waitForSelector("#preset[data-loaded='true']", { state: "attached" });
    await page.getByLabel("Preset").selectOption("web");

    // Two at once, by drag and drop.
    const [a, b, c] = [photo1, photo2, photo3].map((p) => path.basename(p));
    await page.getByLabel("Tags").fill("beach");
    await dropFiles(page, [photo1, photo2]);
    const dropped = await uploadsDone(page, [a, b]);
    for (const name of [a, b]) {
      const row = dropped[name];
      if (!row || row.status !== "COMPLETE" || row.progress !== 100 || !row.id) {
        throw new Error(`${name}: ${JSON.stringify(row)}`);
      }
    }

    // A third through the file chooser, with another tag.
    await page.getByLabel("Tags").fill("city");
    await page.setInputFiles("#files", photo3);
    const chosen = (await uploadsDone(page, [c]))[c];
    if (chosen.status !== "COMPLETE") throw new Error(`${c}: ${JSON.stringify(chosen)}`);

    // Every listed image carries its placeholder and colour, which paint a card before its
    // thumbnail loads.
    const listed = await page.evaluate(async () => {
      const res = await fetch("/v1/images", {
        headers: { Authorization: `Bearer ${localStorage.getItem("imgpipe.token")}` },
      });
      return (await res.json()).items.map((r) => [r.placeholder, r.dominantColor]);
    });
    if (listed.length !== 3 || !listed.every(([p, c]) => p && p.length > 20 && /^#[0-9a-f]{6}$/.test(c))) {
      throw new Error(`placeholders: ${JSON.stringify(listed)}`);
    }
    // The gallery shows all three with thumbnails.
    for (const id of [dropped[a].id, dropped[b].id, chosen.id]) await thumbnailLoaded(page, id);

    // Filter by tag: only the third.
    await page.getByLabel("Tag", { exact: true }).fill("city");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForFunction((id) => {
      const cards = document.querySelectorAll("#gallery .card");
      return cards.length === 1 && cards[0].dataset.imageId === id;
    }, chosen.id);

    // Open it: every rendition previews and downloads.
    await page.click(`#open-${chosen.id}`);
    await page.waitForSelector("#detail[open]");
    await page.waitForFunction(() => Array.from(document.querySelectorAll("#detail-renditions img"))
      .every((img) => img.complete && img.naturalWidth > 0) &&
      document.querySelectorAll("#detail-renditions img").length > 0);
    const links = await page.$$eval("#detail-renditions a", (as) => as.map((x) => ({ id: x.id, href: x.href })));
    const names = links.map((l) => l.id).sort();
    const want = ["download-large", "download-medium", "download-thumb"];
    if (JSON.stringify(names) !== JSON.stringify(want)) {
      throw new Error(`download links ${names.join(", ")}; expected ${want.join(", ")}`);
    }
    for (const link of links) {
      const answer = await page.evaluate(async (href) => {
        const res = await fetch(href);
        const body = await res.arrayBuffer();
        return { status: res.status, type: res.headers.get("content-type"), bytes: body.byteLength };
      }, link.href);
      if (answer.status !== 200 || !/^image\//.test(answer.type || "") || answer.bytes === 0) {
        throw new Error(`${link.id}: ${JSON.stringify(answer)}`);
      }
    }

    // Links for a web page: a 300 px, cropped-by-content pair; the snippet's links work with
    // no token and give 300 and 600 px images.
    await page.getByLabel("Width (CSS px)").fill("300");
    await page.getByLabel("Crop").selectOption("cover-smart");
    await page.getByLabel("Height").fill("200");
    await page.getByRole("button", { name: "Make links" }).click();
    await page.waitForSelector("#link-result:not([hidden])");
    const snippet = await page.inputValue("#link-snippet");
    const urls = [...snippet.matchAll(/(http[^" ]+\/t\/[^" ]+)/g)].map((m) => m[1].replace(/&amp;/g, "&"));
    if (urls.length < 3 || !snippet.includes(" 2x") || !snippet.includes('width="300"')) {
      throw new Error(`links snippet: ${snippet}`);
    }
    const sizes = await page.evaluate(async (pair) => {
      const out = [];
      for (const url of pair) {
        const res = await fetch(url, { credentials: "omit" });
        const blob = await res.blob();
        const bitmap = await createImageBitmap(blob);
        out.push({ status: res.status, type: blob.type, width: bitmap.width, height: bitmap.height });
      }
      return out;
    }, [urls[0], urls[2]]);
    if (sizes[0].status !== 200 || sizes[0].width !== 300 || sizes[0].height !== 200 ||
        sizes[1].width !== 600 || sizes[1].height !== 400 || !/^image\//.test(sizes[0].type)) {
      throw new Error(`links give ${JSON.stringify(sizes)}`);
    }
    await page.getByRole("button", { name: "Copy snippet" }).click();
    await page.waitForFunction(() => document.getElementById("link-copied").textContent === "Copied");

    // Delete it, confirming.
    if (await page.isVisible("#confirm-delete")) throw new Error("the confirmation shows before Delete");
    await page.getByRole("button", { name: "Delete image" }).click();
    await page.getByRole("button", { name: "Yes, delete" }).click();
    await page.waitForSelector("#detail[open]", { state: "detached" }).catch(() => {});
    await page.waitForFunction(() => !document.getElementById("detail").open);
    await page.waitForFunction((id) => !document.querySelector(`.card[data-image-id="${id}"]`), chosen.id);
    const gone = await page.evaluate(async (id) => {
      const res = await fetch(`/v1/images/${id}`, {
        headers: { Authorization: `Bearer ${localStorage.getItem("imgpipe.token")}` },
      });
      return res.status;
    }, chosen.id);
    if (gone !== 404) throw new Error(`the deleted image answers ${gone}`);

    // Back to everything: the two dropped photos, for the screenshots.
    await page.getByRole("button", { name: "Clear" }).click();
    for (const id of [dropped[a].id, dropped[b].id]) await thumbnailLoaded(page, id);
    if (await page.isVisible("#images-more")) throw new Error("Show more with every image shown");
    await page.screenshot({ path: path.join(shots, "desktop.jpg"), type: "jpeg", quality: 70, fullPage: true });

    // A phone: nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    if (widths[0] > widths[1]) throw new Error(`at 390 px the page is ${widths[0]} px wide`);
    await page.screenshot({ path: path.join(shots, "phone.jpg"), type: "jpeg", quality: 70, fullPage: true });

    if (problems.length) throw new Error(problems.join("; "));
    console.log(`PASS ${who}: ${a} and ${b} dropped together and COMPLETE, ${c} found by tag, linked at 1x and 2x and deleted, 390 px fits`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.log(`FAIL: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
