#!/usr/bin/env node
// Renders the notification images from assets/icon.svg, once, with the browser tests' headless
// Chromium: `cd tests/browser && npm ci && node ../../scripts/render-icons.mjs`. The PNGs are
// committed (a PNG is the one icon format every platform's notifications show: Firefox drops an
// SVG icon without width/height, and Android wants a raster badge).
//
// - assets/icon-192.png: the notification icon, 192×192 (Android's largest notification icon
//   size at 4× density; desktops scale it down).
// - assets/badge-96.png: Android's status-bar badge, 96×96, white on transparent: Android draws
//   only the badge's alpha channel, so a full-colour square would show as a white square.

import { readFileSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(repo, "tests", "browser", "package.json"));
const { chromium } = require("playwright-core");

const icon = readFileSync(join(repo, "assets", "icon.svg"), "utf8");
// The icon's warning sign alone, in white: the badge.
const badge = `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">
<path d="M48 14 L82 76 H14 Z" fill="none" stroke="#fff" stroke-width="9" stroke-linejoin="round"/>
<rect x="43.5" y="36" width="9" height="21" rx="3" fill="#fff"/><circle cx="48" cy="66" r="5" fill="#fff"/></svg>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  for (const [name, svg, size] of [["icon-192.png", icon, 192], ["badge-96.png", badge, 96]]) {
    const page = await browser.newPage({ viewport: { width: size, height: size }, deviceScaleFactor: 1 });
    await page.setContent(
      `<style>html,body{margin:0;background:transparent}svg{display:block;width:${size}px;height:${size}px}</style>${svg}`,
    );
    writeFileSync(join(repo, "assets", name), await page.screenshot({ omitBackground: true }));
    await page.close();
  }
} finally {
  await browser.close();
}
