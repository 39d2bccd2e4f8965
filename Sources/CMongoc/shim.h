// libmongoc + libbson (apt: libmongoc-dev). bson_t is 128-byte aligned and imports only as an
// OpaquePointer, so documents are always heap-allocated (bson_new) and the BCON_*/BSON_APPEND_*
// macros are replaced by the bson_append_* functions they expand to.
#pragma once
#include <mongoc/mongoc.h>
#include <bson/bson.h>
