// tests/js runs vitest only for the Durable Streams conformance suite (durable_streams.test.mjs).
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: { include: ["durable_streams.test.mjs"], testTimeout: 30000, hookTimeout: 30000 },
})
