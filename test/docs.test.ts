import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

/** The repository's documentation must stand on its own: nothing it names may live outside the repository. */
const root = resolve(new URL("..", import.meta.url).pathname);
const documents = ["README.md", ...readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];

describe.each(documents)("%s", (document) => {
  const text = readFileSync(join(root, document), "utf8");

  it("names no design file that is not in the repository", () => {
    expect(text).not.toMatch(/DESIGN\.md|DESIGN §|\.\.\/shared|\/work\//);
  });

  it("links only to files that exist inside the repository", () => {
    const targets = [...text.matchAll(/\]\(([^)\s]+)\)/g)]
      .map((m) => m[1]!.split("#")[0]!)
      .filter((target) => target !== "" && !/^[a-z]+:/i.test(target));
    for (const target of targets) {
      const path = resolve(dirname(join(root, document)), target);
      expect(relative(root, path).startsWith(".."), `${target} points outside the repository`).toBe(false);
      expect(existsSync(path), `${target} does not exist`).toBe(true);
    }
  });

  it("states each bold-titled bullet once per section (two copies drift apart)", () => {
    for (const section of text.split(/^## /m)) {
      const titles = [...section.matchAll(/^- \*\*([^*]+)\*\*/gm)].map((m) => m[1]!.replace(/[.:]$/, ""));
      expect(titles.filter((title, i) => titles.indexOf(title) !== i), `repeated in "${section.split("\n")[0]}"`).toEqual([]);
    }
  });
});
