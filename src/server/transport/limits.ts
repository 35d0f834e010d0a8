/** gRPC's customary limit, set explicitly on both transports so that every direction is bounded alike. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
