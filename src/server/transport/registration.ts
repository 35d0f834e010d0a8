import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";

/**
 * One service, implemented once in Connect's shape, ready to be served by
 * either transport. The impl is loosely typed here because a list of services
 * cannot keep each entry's own type; build entries with `registerService` to
 * have the compiler check the impl against its service.
 */
export type ServiceRegistration = {
  service: DescService;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
  impl: Partial<ServiceImpl<any>>;
};

/** A registration whose impl is checked against the service's methods. */
export function registerService<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): ServiceRegistration {
  return { service, impl };
}
