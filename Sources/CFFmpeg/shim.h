// libavformat/libavcodec/libavutil (apt: libavformat-dev libavcodec-dev libavutil-dev).
// Function-like and cast macros do not import into Swift; these inline functions stand in for them.
#pragma once
#include <libavformat/avformat.h>
#include <libavformat/avio.h>
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
#include <libavutil/error.h>
#include <libavutil/mem.h>
#include <errno.h>

/// AVERROR_EOF: what an AVIOContext read callback returns at end of input (never 0).
static inline int cffmpeg_averror_eof(void) { return AVERROR_EOF; }
/// AVERROR(e) for a POSIX errno value.
static inline int cffmpeg_averror(int posix_errno) { return AVERROR(posix_errno); }
/// AVERROR_INVALIDDATA: "the input is not what it claims to be".
static inline int cffmpeg_averror_invaliddata(void) { return AVERROR_INVALIDDATA; }
/// AV_NOPTS_VALUE: "no timestamp".
static inline int64_t cffmpeg_nopts_value(void) { return AV_NOPTS_VALUE; }
