// The web console in Debian's headless chromium, driven by playwright-core, as a person
// would use it: tests/tests/console.rs sets up the folders and starts `backazon ui`,
// then runs this script and checks what it left behind (the downloaded file, the jobs
// file). Every step waits for what the page shows; a step that never happens fails the
// run with the step's name.
//
// Environment: URL (the address `backazon ui` printed), DATA (folder to back up), FILE
// (a file under DATA to download), REPO, GOOD_PW_CMD, BAD_PW_CMD, FLAKY_PW (a password
// file the script spoils), WEBHOOK, SMTP_PORT and CA_FILE (the test's notification
// receivers and the certificate its SMTP server shows), RESTORE_TO, MOUNT_AT (an empty
// folder), SHOTS (screenshots), DOWNLOADS.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const [URL_, DATA, FILE, REPO, SHOTS, DOWNLOADS] =
  ["URL", "DATA", "FILE", "REPO", "SHOTS", "DOWNLOADS"].map(env);

let step = "starting chromium";
const log = (s) => { step = s; console.log(`step: ${s}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  log("open the printed address");
  await page.goto(URL_);
  await page.getByRole("heading", { name: "Jobs" }).waitFor();
  if (page.url().includes("token=")) throw new Error("the token stayed in the address bar");

  log("new job: the folder picker");
  await page.click("[data-test=new-job]");
  await page.fill("input[name=name]", "documents");
  await page.click("[data-test=add-folder]");
  await page.click(`[data-test=folders] a[data-name="/"]`);
  for (const part of DATA.split("/").filter(Boolean)) {
    await page.click(`[data-test=folders] a[data-name="${part}"]`);
    await page.locator(".dialog .small", { hasText: part }).first().waitFor();
  }
  await page.click("[data-test=choose-folder]");
  await page.locator(".paths code", { hasText: DATA }).waitFor();

  log("a schedule that does not parse is named beside its field");
  await page.fill("input[name=schedule]", "daily 25:99");
  await page.locator("[data-field=schedule] .err", { hasText: "is not a time" }).waitFor();
  await page.fill("input[name=schedule]", "daily 02:30");
  await page.locator("[data-test=schedule-preview]", { hasText: "Next runs" }).waitFor();
  const preview = await page.textContent("[data-test=schedule-preview]");
  if ((preview.match(/02:30/g) || []).length !== 5) throw new Error(`preview: ${preview}`);

  log("a password the repository refuses is named beside its field, nothing saved");
  await page.fill("input[name=repository]", REPO);
  await page.fill("input[name=password_command]", env("BAD_PW_CMD"));
  await page.fill("input[name='keep.daily']", "14");
  await page.fill("input[name='keep.last']", "5");
  await page.click("[data-test=save]");
  await page.locator("[data-field=password_command] .err", { hasText: "wrong password" }).waitFor();
  const st = await page.evaluate(() => fetch("/api/status").then((r) => r.json()));
  if (st.jobs.length !== 0) throw new Error("a job was saved with a wrong password");

  log("test the connection, then save the job");
  await page.fill("input[name=password_command]", env("GOOD_PW_CMD"));
  await page.click("[data-test=test-repository]");
  await page.locator("[data-test=repository-result]", { hasText: "opened" }).waitFor();
  log("more settings: a prune schedule that does not parse is named, then skip marked folders");
  await page.click("[data-test=advanced] summary");
  await page.fill("input[name=prune_schedule]", "weekly funday 04:00");
  await page.click("[data-test=save]");
  await page.locator("[data-field=prune_schedule] .err", { hasText: "funday" }).waitFor();
  await page.fill("input[name=prune_schedule]", "monthly 1 04:00");
  await page.fill("textarea[name=exclude_if_present]", ".nobackup");
  await page.check("input[name=exclude_caches]");
  await page.screenshot({ path: path.join(SHOTS, "job-editor.png"), fullPage: true });
  await page.click("[data-test=save]");
  const card = page.locator("[data-job=documents]");
  await card.waitFor();

  log("run it and watch the progress reach the end");
  await card.locator("[data-test=run]").click();
  await card.locator("[data-test=progress]").waitFor();
  await page.locator("[data-job=documents][data-state=ok]").waitFor({ timeout: 120000 });
  await card.locator("[data-test=last-run]", { hasText: "success" }).waitFor();
  await card.locator(".chart svg rect").first().waitFor();

  log("browse the snapshot, page through a wide folder");
  await card.getByRole("link", { name: "Snapshots" }).click();
  await page.locator("tr[data-snapshot] a").first().waitFor();
  await page.locator("tr[data-snapshot] a").first().click();
  const rel = path.relative(DATA, FILE).split("/");
  const dirs = [...DATA.split("/").filter(Boolean), ...rel.slice(0, -1)];
  for (const part of DATA.split("/").filter(Boolean)) {
    await page.click(`tr[data-entry="${part}"] a`);
  }
  await page.click(`tr[data-entry="wide"] a`);
  await page.locator("tr[data-entry]").nth(499).waitFor();
  if (await page.locator("tr[data-entry]").count() !== 500) throw new Error("the first page is not 500 entries");
  await page.click("[data-test=more]");
  await page.locator("tr[data-entry]").nth(999).waitFor();
  await page.goBack();
  for (const part of dirs.slice(DATA.split("/").filter(Boolean).length)) {
    await page.click(`tr[data-entry="${part}"] a`);
  }
  await page.screenshot({ path: path.join(SHOTS, "snapshot-browser.png"), fullPage: true });

  log("download a file");
  const name = rel[rel.length - 1];
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click(`tr[data-entry="${name}"] [data-test=download]`),
  ]);
  await download.saveAs(path.join(DOWNLOADS, name));

  log("download the folder as a zip");
  const [zip] = await Promise.all([page.waitForEvent("download"), page.click("[data-test=zip]")]);
  await zip.saveAs(path.join(DOWNLOADS, "folder.zip"));

  log("restore a folder to a path, with progress");
  await page.click("[data-test=restore]");
  await page.fill(".dialog input[name=target]", env("RESTORE_TO"));
  await page.click("[data-test=do-restore]");
  await page.locator("[data-task=restore][data-done=ok]").waitFor({ timeout: 60000 });

  log("a second run shows how far it is against the first");
  fs.writeFileSync(path.join(DATA, "Documents", "new.txt"), "added after the first run\n");
  fs.appendFileSync(path.join(DATA, "Documents", "notes.txt"), "one more line\n");
  await page.click("a[data-nav=dashboard]");
  await card.locator("[data-test=run]").click();
  await card.locator("[data-test=progress]", { hasText: "%" }).waitFor();
  await page.locator("[data-job=documents][data-state=ok]").waitFor({ timeout: 120000 });

  log("cancel a run");
  await card.locator("[data-test=run]").click();
  await card.locator("[data-test=progress]").waitFor();
  await card.getByRole("button", { name: "Cancel" }).click();
  await page.locator("[data-job=documents][data-state=failed]").waitFor({ timeout: 30000 });
  await card.locator("[data-test=last-run]", { hasText: "interrupted" }).waitFor();

  log("compare the two snapshots");
  await card.getByRole("link", { name: "Snapshots" }).click();
  await page.locator("tr[data-snapshot]").nth(1).waitFor();
  await page.locator("[data-test=pick]").nth(0).check();
  await page.locator("[data-test=pick]").nth(1).check();
  await page.click("[data-test=compare]");
  await page.locator("[data-diff=added] li", { hasText: "Documents/new.txt" }).waitFor();
  await page.locator("[data-diff=changed] li", { hasText: "Documents/notes.txt" }).waitFor();
  if (await page.locator("[data-diff=changed] li").count() !== 1) throw new Error("more than notes.txt changed");

  log("filter the snapshots by host, tag and date");
  await page.goBack();
  const count = page.locator("[data-test=count]");
  await count.filter({ hasText: /^2 of 2 / }).waitFor();
  const hostname = (await page.locator("[data-test=filter-host] option").nth(1).textContent()).trim();
  await page.selectOption("[data-test=filter-host]", hostname);
  await count.filter({ hasText: /^2 of 2 / }).waitFor();
  const tomorrow = new Date(Date.now() + 86400000);
  const day = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  await page.fill("[data-test=filter-from]", day(tomorrow));
  await count.filter({ hasText: /^0 of 2 / }).waitFor();
  await page.fill("[data-test=filter-from]", day(new Date()));
  await count.filter({ hasText: /^2 of 2 / }).waitFor();
  await page.fill("[data-test=filter-until]", day(new Date(Date.now() - 86400000)));
  await count.filter({ hasText: /^0 of 2 / }).waitFor();
  await page.fill("[data-test=filter-until]", "");
  await page.fill("[data-test=filter-from]", "");

  log("find a file name across snapshots");
  await page.fill("[data-test=search]", "REPORT");
  await page.press("[data-test=search]", "Enter");
  await page.locator("tr[data-hit]", { hasText: "report.bin" }).nth(1).waitFor();

  log("check the repository, and run again after the cancel");
  await page.click("a[data-nav=dashboard]");
  await card.getByRole("button", { name: "Check", exact: true }).click();
  await page.locator("[data-task=check][data-done=ok]").waitFor({ timeout: 60000 });
  log("prune the repository from its card");
  await card.getByRole("button", { name: "Prune", exact: true }).click();
  await card.locator("[data-test=last-prune]", { hasText: "success" }).waitFor({ timeout: 60000 });
  await card.locator("[data-test=run]").click();
  await page.locator("[data-job=documents][data-state=ok]").waitFor({ timeout: 60000 });

  log("mount every snapshot, read a file through the mount, unmount");
  const at = env("MOUNT_AT");
  await card.locator("[data-test=mount]").click();
  await page.fill(".dialog input[name=mountpoint]", at);
  await page.click("[data-test=do-mount]");
  await card.locator("[data-test=unmount]").waitFor();
  if (fs.readdirSync(at).length === 0) throw new Error("the mount shows nothing");
  await card.locator("[data-test=unmount]").click();
  await card.locator("[data-test=mount]").waitFor();
  if (fs.readdirSync(at).length !== 0) throw new Error("the mount is still there");

  log("a failing job turns red");
  const created = await page.evaluate(async ([repo, data, pw]) => {
    const r = await fetch("/api/jobs", {
      method: "POST",
      headers: { "content-type": "application/json", "x-backazon": "1" },
      body: JSON.stringify({ name: "photos", job: { repository: repo, paths: [data], password_file: pw } }),
    });
    return r.status + " " + (await r.text());
  }, [REPO, DATA, env("FLAKY_PW")]);
  if (!created.startsWith("201")) throw new Error(`creating job photos: ${created}`);

  log("notifications: a webhook and email, tested from the editor");
  await page.goto(new URL("/#/job/photos", page.url()).href);
  await page.fill("input[name='notify.webhook']", env("WEBHOOK"));
  await page.fill("input[name='notify.email.to']", "owner@example.com");
  await page.fill("input[name='notify.email.from']", "backazon@example.com");
  await page.fill("input[name='notify.email.server']", "localhost");
  await page.fill("input[name='notify.email.port']", env("SMTP_PORT"));
  await page.fill("input[name='notify.email.ca_file']", env("CA_FILE"));
  await page.fill("input[name='notify.healthchecks']", env("WEBHOOK").replace(/\/hook$/, "/hc"));
  // A comment of the person's own in the jobs file outlives the console's edit.
  fs.appendFileSync(env("CONFIG"), "# kept: a note of my own\n");
  await page.click("[data-test=notify-test]");
  await page.locator("[data-test=notify-result]", { hasText: "Sent." }).waitFor({ timeout: 60000 });
  await page.click("[data-test=save]");
  await page.locator("[data-job=photos]").waitFor();

  fs.writeFileSync(env("FLAKY_PW"), "not the password\n");
  await page.click("a[data-nav=dashboard]");
  const photos = page.locator("[data-job=photos]");
  await photos.locator("[data-test=run]").click();
  await page.locator("[data-job=photos][data-state=failed]").waitFor({ timeout: 60000 });
  await page.locator("[data-test=alert]", { hasText: "photos" }).waitFor();
  const color = await photos.evaluate((el) => getComputedStyle(el).borderLeftColor);
  if (color !== "rgb(198, 40, 40)") throw new Error(`the failed job's border is ${color}`);
  await page.screenshot({ path: path.join(SHOTS, "dashboard.png"), fullPage: true });

  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log("ok");
} catch (e) {
  console.error(`failed at step "${step}": ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
