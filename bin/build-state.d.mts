/** The package's root folder (where package.json is). */
export const PACKAGE_ROOT: string;
/** dist/.build-stamp, written by a build with the time it started. */
export const STAMP: string;
/** Why dist/ under `root` cannot be run as it is, or undefined when it can (always in an installed package). */
export function staleReason(root?: string): string | undefined;
