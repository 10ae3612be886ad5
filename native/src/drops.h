// The drop probe (drops.cc): DropProbe and dropReasonNames on the addon's exports, its structs in exports.layout.
#pragma once

#include <napi.h>

void register_drops(Napi::Env env, Napi::Object exports);
