// Attribution of flows to peers, resources, policies and users (docs/attribution.md).
export * from './config';
export * from './ip';
export * from './lpm';
export * from './tables';
export * from './attributor';
