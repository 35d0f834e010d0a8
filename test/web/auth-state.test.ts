import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { deniedTitle, permissionFromProbe } from "../../web/src/auth.js";

describe("permissionFromProbe (an empty-id call to a guarded action)", () => {
  it("reads PERMISSION_DENIED as denied, with the server's reason", () => {
    expect(permissionFromProbe(Code.PermissionDenied, "token \"d\" has role operator")).toEqual({ state: "denied", reason: "token \"d\" has role operator" });
  });
  it("reads INVALID_ARGUMENT (authorized, then refused for the empty id) as allowed", () => {
    expect(permissionFromProbe(Code.InvalidArgument, "rollout_id is required")).toEqual({ state: "allowed" });
  });
  it("learns nothing from an unreachable server", () => {
    expect(permissionFromProbe(Code.Unavailable, "fetch failed")).toEqual({ state: "unknown" });
    expect(permissionFromProbe(Code.Unauthenticated, "unknown or revoked token")).toEqual({ state: "unknown" });
  });
  it("gives a tooltip only for a denied action", () => {
    expect(deniedTitle({ state: "denied", reason: "no" })).toBe("Your token may not do this: no");
    expect(deniedTitle({ state: "allowed" })).toBeUndefined();
    expect(deniedTitle({ state: "unknown" })).toBeUndefined();
  });
});
