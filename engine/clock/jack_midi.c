/* JACK MIDI ports with their process callback in C: the MIDI clock input and output.
 *
 * A JACK client's process callback runs in the server's cycle; a Python one must take the GIL
 * first, and while it waits the whole graph waits (every client of the cycle, backline's audio
 * included). So, as for the audio callback (engine/audio/rtout.c), the callback here only moves
 * events between the port and a single-producer single-consumer queue, stamped in JACK frames;
 * Python works on the queue from its own threads.
 *
 * - Input: each event of the cycle goes into the queue as (cycle frame + offset, bytes);
 *   events longer than 3 bytes (SysEx: never clock) and events that find the queue full are
 *   counted and dropped.
 * - Output: Python queues (frame, bytes) in frame order; the callback writes the ones due in
 *   this cycle at their offset (late ones at offset 0).
 *
 * libjack's functions come as pointers from Python (JACK-Client's own cffi binding of
 * libjack), so this file links against nothing and includes no JACK or Python header.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BL_MIDI_QUEUE 4096 /* a power of two */

typedef struct {
    uint32_t time;
    size_t size;
    uint8_t *buffer;
} bl_jack_midi_event; /* jack_midi_event_t */

typedef struct {
    uint32_t frame;
    uint8_t size;
    uint8_t data[3];
} bl_midi_event;

typedef struct bl_midi {
    void *(*port_get_buffer)(void *port, uint32_t frames);
    uint32_t (*event_count)(void *buffer);
    int (*event_get)(bl_jack_midi_event *event, void *buffer, uint32_t index);
    void (*clear_buffer)(void *buffer);
    int (*event_write)(void *buffer, uint32_t time, const uint8_t *data, size_t size);
    uint32_t (*last_frame_time)(const void *client);
    void *client, *port;
    int output;
    bl_midi_event queue[BL_MIDI_QUEUE];
    _Atomic uint64_t head; /* producer: the next slot it fills */
    _Atomic uint64_t tail; /* consumer: the next slot it takes */
    _Atomic int64_t dropped;
} bl_midi;

bl_midi *bl_midi_new(void *client, void *port, int output, void *port_get_buffer, void *event_count, void *event_get,
                     void *clear_buffer, void *event_write, void *last_frame_time) {
    bl_midi *m = calloc(1, sizeof(bl_midi));
    if (!m) return NULL;
    m->client = client;
    m->port = port;
    m->output = output;
    m->port_get_buffer = (void *(*)(void *, uint32_t))port_get_buffer;
    m->event_count = (uint32_t(*)(void *))event_count;
    m->event_get = (int (*)(bl_jack_midi_event *, void *, uint32_t))event_get;
    m->clear_buffer = (void (*)(void *))clear_buffer;
    m->event_write = (int (*)(void *, uint32_t, const uint8_t *, size_t))event_write;
    m->last_frame_time = (uint32_t(*)(const void *))last_frame_time;
    return m;
}

void bl_midi_free(bl_midi *m) { free(m); }

static int push(bl_midi *m, uint32_t frame, const uint8_t *data, size_t size) {
    uint64_t head = atomic_load_explicit(&m->head, memory_order_relaxed);
    if (size == 0 || size > 3 || head - atomic_load_explicit(&m->tail, memory_order_acquire) >= BL_MIDI_QUEUE) {
        atomic_fetch_add(&m->dropped, 1);
        return 0;
    }
    bl_midi_event *slot = &m->queue[head & (BL_MIDI_QUEUE - 1)];
    slot->frame = frame;
    slot->size = (uint8_t)size;
    memcpy(slot->data, data, size);
    atomic_store_explicit(&m->head, head + 1, memory_order_release);
    return 1;
}

/* Python (output: any one thread): queue `data` for JACK frame `frame`; 0 if dropped. */
int bl_midi_put(bl_midi *m, uint32_t frame, const uint8_t *data, size_t size) { return push(m, frame, data, size); }

/* Python (input: the engine loop): the oldest queued event; 0 when there is none. */
int bl_midi_take(bl_midi *m, uint32_t *frame, uint8_t *data, uint8_t *size) {
    uint64_t tail = atomic_load_explicit(&m->tail, memory_order_relaxed);
    if (tail == atomic_load_explicit(&m->head, memory_order_acquire)) return 0;
    bl_midi_event *slot = &m->queue[tail & (BL_MIDI_QUEUE - 1)];
    *frame = slot->frame;
    *size = slot->size;
    memcpy(data, slot->data, slot->size);
    atomic_store_explicit(&m->tail, tail + 1, memory_order_release);
    return 1;
}

int64_t bl_midi_pending(const bl_midi *m) {
    return (int64_t)(atomic_load(&m->head) - atomic_load(&m->tail));
}

int64_t bl_midi_dropped(const bl_midi *m) { return atomic_load(&m->dropped); }

/* JACK's JackProcessCallback, on the server's process thread. */
int bl_midi_process(uint32_t frames, void *arg) {
    bl_midi *m = arg;
    void *buffer = m->port_get_buffer(m->port, frames);
    uint32_t base = m->last_frame_time(m->client);
    if (!m->output) {
        uint32_t count = m->event_count(buffer);
        for (uint32_t i = 0; i < count; i++) {
            bl_jack_midi_event event;
            if (m->event_get(&event, buffer, i) == 0) push(m, base + event.time, event.buffer, event.size);
        }
        return 0;
    }
    m->clear_buffer(buffer);
    uint64_t tail = atomic_load_explicit(&m->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&m->head, memory_order_acquire);
    for (; tail != head; tail++) {
        bl_midi_event *slot = &m->queue[tail & (BL_MIDI_QUEUE - 1)];
        int32_t due = (int32_t)(slot->frame - base); /* JACK's 32-bit counter wraps */
        if (due >= (int32_t)frames) break;
        m->event_write(buffer, due > 0 ? (uint32_t)due : 0, slot->data, slot->size);
    }
    atomic_store_explicit(&m->tail, tail, memory_order_release);
    return 0;
}
