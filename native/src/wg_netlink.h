// Netlink reads for the WireGuard attribution source (wg_netlink.cc).
#pragma once

#include <napi.h>

// Adds wgGetDevice and netlinkAddresses to the addon's exports.
void register_wg_netlink(Napi::Env env, Napi::Object exports);
