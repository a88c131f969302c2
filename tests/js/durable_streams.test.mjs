// The official Durable Streams server conformance suite (@durable-streams/server-conformance-tests,
// pinned in package.json) against a running server: tests/test_durable_streams_conformance.py starts
// `runengine serve` and runs `npx vitest run durable_streams.test.mjs` with CONFORMANCE_TEST_URL set to
// its Durable Streams prefix. (The package's own CLI finds no test file under node_modules.)
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("set CONFORMANCE_TEST_URL to the server's Durable Streams prefix (http://HOST:PORT/ds)")

runConformanceTests({ baseUrl, longPollTimeoutMs: Number(process.env.CONFORMANCE_LONG_POLL_MS ?? 20000) })
