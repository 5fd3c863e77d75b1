/* backline's real-time output: PortAudio's stream callback, in C, over a ring of audio
 * indexed by absolute output frame.
 *
 * Why C: a Python callback must take the GIL before it can start, and any other Python
 * thread (the engine loop, the OSC server, a garbage collection) can hold it past a period.
 * This callback never touches Python: it copies the frames at its read position from the
 * ring, writes zeros (and counts) for any frame not there yet, applies the stop's fade and
 * returns. No lock, no allocation, no system call after its first block (gettid, once; the
 * clock it times itself by is the vDSO's).
 *
 * Why our own ring and not a FIFO (python-rtmixer, PortAudio's blocking writes): rollback
 * rewrites audio that is generated but not played yet. Here the writer (Python, the engine's
 * feeder: engine/audio/feeder.py) writes frames anywhere ahead of the published read
 * position and publishes how far the ring is filled (`limit`, a release store after the
 * samples); the callback publishes where it reads (`read`). A frame below `limit` and not
 * below `read` + one block may still change. The writer keeps the whole look-ahead in the
 * ring, so Python has the look-ahead as its deadline, not a period.
 *
 * Running dry: if the feeder itself is late (the interpreter frozen: a long garbage collection,
 * a stuck loop), the callback loops the bar the feeder designated (`bl_designate`: the last
 * complete bar, bar-aligned as the playback ring's replay would be), fading in from the last
 * frame it played, so the audio never stops; only with no bar designated yet does it play
 * zeros (a gap). The feeder, back, goes on from where the callback is, in the same replay.
 *
 * Frame lock: on JACK the read position follows JACK's frame clock (the cycle's frame
 * time, read through a function pointer into libjack handed over by Python), so cycles JACK
 * skips on an xrun are skipped in the audio too and the bar grid stays on JACK's clock.
 *
 * Built by `pip install` (setup.py, an optional extension: no Python.h, only libc) and
 * loaded with cffi's ABI mode (engine/audio/rtout.py).
 */
#define _GNU_SOURCE /* syscall(SYS_gettid), clock_gettime under -std=c11 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PA_CONTINUE 0
#define BL_MAX_CHANNELS 8
#define BL_ENTRY_FADE 240 /* 5 ms at 48 kHz: into a dry replay from the last frame played */
#define PA_OUTPUT_UNDERFLOW 0x00000004UL
#define BL_SKIP_LOG 16 /* the newest skips kept, for the status: where JACK's frames moved on without us */

typedef uint32_t (*bl_frame_time_fn)(const void *client);

typedef struct bl_out {
    float *buf;
    int64_t capacity; /* frames, a power of two */
    int channels;
    int64_t fade_len;
    _Atomic int64_t limit;    /* writer: frames below it are in the ring */
    _Atomic int64_t read;     /* callback: the frame it plays next (the playhead) */
    _Atomic int64_t fade_pos; /* -1: not fading */
    _Atomic int armed;
    _Atomic int finished;     /* the fade has reached silence */
    _Atomic int tid;
    _Atomic int64_t callbacks, xruns, gaps, gap_frames, skipped;
    _Atomic int64_t skip_at[BL_SKIP_LOG], skip_len[BL_SKIP_LOG], skip_n; /* the newest skips (playhead, frames) */
    _Atomic int64_t busy_ns, max_ns; /* time spent in the callback: total, longest */
    _Atomic int64_t rp_start, rp_len, rp_anchor; /* the bar to loop when dry (rp_len 0: none) */
    _Atomic int64_t dry_frames, dry_entries;      /* frames looped when dry, times it began */
    int dry;                                      /* the callback's: the last block ran dry */
    int64_t fade_in;                              /* frames of the entry fade done */
    float last[BL_MAX_CHANNELS];                  /* the last frame played */
    /* frame lock: set before the stream starts, then the callback's alone */
    bl_frame_time_fn frame_time;
    const void *client;
    int have_origin;
    uint32_t origin, cycle_frame;
    int64_t cycle_start, in_cycle;
} bl_out;

enum { BL_CALLBACKS, BL_XRUNS, BL_GAPS, BL_GAP_FRAMES, BL_SKIPPED, BL_TID, BL_FINISHED, BL_ORIGIN, BL_LOCKED,
       BL_BUSY_NS, BL_MAX_NS, BL_DRY_FRAMES, BL_DRY_ENTRIES };

bl_out *bl_out_new(int64_t capacity, int channels, int64_t fade_len) {
    if (capacity <= 0 || (capacity & (capacity - 1)) || channels <= 0 || channels > BL_MAX_CHANNELS) return NULL;
    bl_out *s = calloc(1, sizeof(bl_out));
    if (!s) return NULL;
    s->buf = calloc((size_t)(capacity * channels), sizeof(float));
    if (!s->buf) {
        free(s);
        return NULL;
    }
    s->capacity = capacity;
    s->channels = channels;
    s->fade_len = fade_len > 0 ? fade_len : 1;
    atomic_init(&s->fade_pos, -1);
    return s;
}

void bl_out_free(bl_out *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

float *bl_out_buffer(bl_out *s) { return s->buf; }

void bl_publish(bl_out *s, int64_t limit) { atomic_store_explicit(&s->limit, limit, memory_order_release); }

int64_t bl_read_position(const bl_out *s) { return atomic_load_explicit(&s->read, memory_order_acquire); }

void bl_arm(bl_out *s) { atomic_store(&s->armed, 1); }

void bl_fade(bl_out *s) {
    int64_t idle = -1;
    atomic_compare_exchange_strong(&s->fade_pos, &idle, 0);
}

/* The feeder: loop frames [start, start + length) of the ring, frame p playing the bar's frame
 * (p - anchor) mod length, if the callback runs dry. Only a bar already in the ring. */
void bl_designate(bl_out *s, int64_t start, int64_t length, int64_t anchor) {
    atomic_store_explicit(&s->rp_len, 0, memory_order_release); /* never a torn triple: off while it changes */
    atomic_store_explicit(&s->rp_start, start, memory_order_relaxed);
    atomic_store_explicit(&s->rp_anchor, anchor, memory_order_relaxed);
    atomic_store_explicit(&s->rp_len, length > 0 ? length : 0, memory_order_release);
}

void bl_frame_lock(bl_out *s, void *frame_time, const void *client) {
    s->frame_time = (bl_frame_time_fn)frame_time;
    s->client = client;
}

int64_t bl_stat(const bl_out *s, int which) {
    switch (which) {
    case BL_CALLBACKS: return atomic_load(&s->callbacks);
    case BL_XRUNS: return atomic_load(&s->xruns);
    case BL_GAPS: return atomic_load(&s->gaps);
    case BL_GAP_FRAMES: return atomic_load(&s->gap_frames);
    case BL_SKIPPED: return atomic_load(&s->skipped);
    case BL_TID: return atomic_load(&s->tid);
    case BL_FINISHED: return atomic_load(&s->finished);
    case BL_ORIGIN: return s->origin;
    case BL_LOCKED: return s->have_origin;
    case BL_BUSY_NS: return atomic_load(&s->busy_ns);
    case BL_MAX_NS: return atomic_load(&s->max_ns);
    case BL_DRY_FRAMES: return atomic_load(&s->dry_frames);
    case BL_DRY_ENTRIES: return atomic_load(&s->dry_entries);
    default: return -1;
    }
}

/* Where a block of `frames` taken in the JACK cycle at `frame` starts; `playhead` is where the
 * last block ended. Several blocks per cycle (a period a multiple of the block size) follow each
 * other in it; a block a multiple of the period sees every n-th cycle. A skipped cycle skips its
 * audio (counted), a repeated one plays its block again. The callback's alone (and tests'). */
int64_t bl_place(bl_out *s, uint32_t frame, int64_t frames, int64_t playhead) {
    if (!s->have_origin) {
        s->have_origin = 1;
        s->origin = frame - (uint32_t)playhead;
        s->cycle_frame = frame;
        s->cycle_start = playhead;
        s->in_cycle = 0;
    } else if (frame != s->cycle_frame) {
        s->cycle_start += (int32_t)(frame - s->cycle_frame); /* JACK's 32-bit counter wraps */
        s->cycle_frame = frame;
        s->in_cycle = 0;
    }
    int64_t start = s->cycle_start + s->in_cycle;
    s->in_cycle += frames;
    if (start > playhead) {
        atomic_fetch_add(&s->skipped, start - playhead);
        int64_t n = atomic_load_explicit(&s->skip_n, memory_order_relaxed);
        atomic_store_explicit(&s->skip_at[n % BL_SKIP_LOG], playhead, memory_order_relaxed);
        atomic_store_explicit(&s->skip_len[n % BL_SKIP_LOG], start - playhead, memory_order_relaxed);
        atomic_store_explicit(&s->skip_n, n + 1, memory_order_release);
    }
    return start;
}

/* Up to `max` of the newest skips, oldest first, into at[] (playhead positions) and len[]
 * (frames); returns how many. Any thread: a skip logged while it reads may replace the
 * oldest entry read (16 skips in one call: the box is losing cycles by the second anyway). */
int64_t bl_skips(const bl_out *s, int64_t *at, int64_t *len, int64_t max) {
    int64_t n = atomic_load_explicit(&s->skip_n, memory_order_acquire);
    int64_t k = n < BL_SKIP_LOG ? n : BL_SKIP_LOG;
    if (k > max) k = max;
    for (int64_t i = 0; i < k; i++) {
        int64_t j = (n - k + i) % BL_SKIP_LOG;
        at[i] = atomic_load_explicit(&s->skip_at[j], memory_order_relaxed);
        len[i] = atomic_load_explicit(&s->skip_len[j], memory_order_relaxed);
    }
    return k;
}

static void copy_out(const bl_out *s, float *out, int64_t position, int64_t frames) {
    int64_t pos = position & (s->capacity - 1);
    int64_t first = frames < s->capacity - pos ? frames : s->capacity - pos;
    size_t frame_bytes = sizeof(float) * (size_t)s->channels;
    memcpy(out, s->buf + pos * s->channels, (size_t)first * frame_bytes);
    if (frames > first) memcpy(out + first * s->channels, s->buf, (size_t)(frames - first) * frame_bytes);
}

static void fade(bl_out *s, float *out, int64_t frames) {
    int64_t pos = atomic_load_explicit(&s->fade_pos, memory_order_relaxed);
    if (pos < 0) return;
    float span = s->fade_len > 1 ? (float)(s->fade_len - 1) : 1.0f;
    for (int64_t i = 0; i < frames; i++, pos++) {
        float gain = pos < s->fade_len ? 1.0f - (float)pos / span : 0.0f;
        for (int c = 0; c < s->channels; c++) out[i * s->channels + c] *= gain;
    }
    atomic_store_explicit(&s->fade_pos, pos, memory_order_relaxed);
    if (pos >= s->fade_len) atomic_store(&s->finished, 1);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Frames [from, frames) of `out` (block position `start`) were not fed: loop the designated bar,
 * fading in from the last frame played; zeros (a gap) if there is none. */
static void run_dry(bl_out *s, float *out, int64_t start, int64_t from, int64_t frames, int playing) {
    int ch = s->channels;
    int64_t len = atomic_load_explicit(&s->rp_len, memory_order_acquire);
    int64_t bar = atomic_load_explicit(&s->rp_start, memory_order_relaxed);
    int64_t anchor = atomic_load_explicit(&s->rp_anchor, memory_order_relaxed);
    if (len != atomic_load_explicit(&s->rp_len, memory_order_acquire)) len = 0; /* changed under us: a gap this once */
    if (len <= 0) {
        memset(out + from * ch, 0, sizeof(float) * (size_t)((frames - from) * ch));
        if (playing) {
            atomic_fetch_add(&s->gaps, 1);
            atomic_fetch_add(&s->gap_frames, frames - from);
        }
        s->dry = 0;
        return;
    }
    for (int64_t i = from; i < frames;) {
        int64_t offset = (start + i - anchor) % len;
        if (offset < 0) offset += len;
        int64_t take = frames - i < len - offset ? frames - i : len - offset;
        copy_out(s, out + i * ch, bar + offset, take);
        i += take;
    }
    if (!s->dry) {
        s->dry = 1;
        s->fade_in = 0;
        if (playing) atomic_fetch_add(&s->dry_entries, 1);
    }
    for (int64_t i = from; i < frames && s->fade_in < BL_ENTRY_FADE; i++, s->fade_in++) {
        float w = ((float)s->fade_in + 0.5f) / BL_ENTRY_FADE;
        for (int c = 0; c < ch; c++) out[i * ch + c] = w * out[i * ch + c] + (1.0f - w) * s->last[c];
    }
    if (playing) atomic_fetch_add(&s->dry_frames, frames - from);
}

/* PortAudio's PaStreamCallback (float32, interleaved). */
int bl_callback(const void *input, void *output, unsigned long frame_count, const void *time_info,
                unsigned long status, void *user) {
    (void)input;
    (void)time_info;
    bl_out *s = user;
    float *out = output;
    int64_t frames = (int64_t)frame_count;
    if (!atomic_load_explicit(&s->tid, memory_order_relaxed))
        atomic_store_explicit(&s->tid, (int)syscall(SYS_gettid), memory_order_relaxed);
    if (!atomic_load_explicit(&s->armed, memory_order_acquire)) {
        memset(out, 0, sizeof(float) * (size_t)(frames * s->channels));
        return PA_CONTINUE;
    }
    int64_t began = now_ns();
    int playing = !atomic_load_explicit(&s->finished, memory_order_relaxed);
    if ((status & PA_OUTPUT_UNDERFLOW) && playing) atomic_fetch_add(&s->xruns, 1);
    int64_t start = atomic_load_explicit(&s->read, memory_order_relaxed);
    if (s->frame_time) start = bl_place(s, s->frame_time(s->client), frames, start);
    int64_t have = atomic_load_explicit(&s->limit, memory_order_acquire) - start;
    have = have < 0 ? 0 : have > frames ? frames : have;
    copy_out(s, out, start, have);
    if (have < frames)
        run_dry(s, out, start, have, frames, playing);
    else
        s->dry = 0;
    fade(s, out, frames);
    if (frames > 0) memcpy(s->last, out + (frames - 1) * s->channels, sizeof(float) * (size_t)s->channels);
    atomic_store_explicit(&s->read, start + frames, memory_order_release);
    atomic_fetch_add(&s->callbacks, 1);
    int64_t took = now_ns() - began;
    atomic_fetch_add_explicit(&s->busy_ns, took, memory_order_relaxed);
    if (took > atomic_load_explicit(&s->max_ns, memory_order_relaxed))
        atomic_store_explicit(&s->max_ns, took, memory_order_relaxed);
    return PA_CONTINUE;
}
