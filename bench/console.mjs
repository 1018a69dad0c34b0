// Times the console's pages in headless chromium (bench/console.sh runs it).
//   node bench/console.mjs URL RUNS JOB JOBS
import { pathToFileURL } from "node:url";
import path from "node:path";

const [url, runs, job, jobs] = process.argv.slice(2);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const { chromium } = await import(pathToFileURL(path.join(root, "tests/browser/node_modules/playwright-core/index.mjs")).href);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const ctx = await browser.newContext();
const first = await ctx.newPage();
await first.goto(url); // trades the token for the session cookie
const origin = new URL(url).origin;
const paint = [], cards = [], listFirst = [], listAgain = [];
for (let i = 0; i < Number(runs); i++) {
  const page = await ctx.newPage();
  await page.goto(origin + "/");
  await page.locator("[data-job]").nth(Number(jobs) - 1).waitFor();
  const t = await page.evaluate(() => ({
    fcp: (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime,
    now: performance.now(),
  }));
  paint.push(t.fcp);
  cards.push(t.now);
  for (const list of [listFirst, listAgain]) {
    const ms = await page.evaluate(async (job) => {
      const t0 = performance.now();
      location.hash = `#/snapshots/${job}`;
      while (!document.querySelector("tr[data-snapshot]")) await new Promise((r) => setTimeout(r, 5));
      const ms = performance.now() - t0;
      location.hash = "#/";
      return ms;
    }, job);
    list.push(ms);
  }
  await page.close();
}
console.log(`dashboard: first contentful paint ${median(paint).toFixed(0)} ms, all ${jobs} job cards ${median(cards).toFixed(0)} ms`);
console.log(`snapshot list: first look ${listFirst[0].toFixed(0)} ms (repository opened in the background at start), then ${median(listAgain.concat(listFirst.slice(1))).toFixed(0)} ms`);
await browser.close();
