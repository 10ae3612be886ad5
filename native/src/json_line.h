// The collector's JSON fast path (json_line.cc).
#pragma once

#include <node_api.h>

#include <cstddef>
#include <cstdint>

// The JSON line of one flow.FlowEvent message into out[0, room): its length, or -1 when the
// message needs the JavaScript route (not a plain valid event, or out of room). On success
// *event_id_at is the offset of the 16-byte event id in msg.
int64_t flow_event_json(const uint8_t *msg, uint32_t n, uint8_t *out, size_t room, uint64_t received_ms, uint32_t *event_id_at);

// Adds flowEventJson to the addon's exports.
void register_flow_event_json(napi_env env, napi_value exports);
