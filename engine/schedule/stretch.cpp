// backline's binding of Signalsmith Stretch (vendored in engine/schedule/signalsmith, MIT): a
// pitch-preserving time-stretcher that streams. Each call takes `in_frames` of input and gives
// `out_frames` of output, so the ratio may change from call to call (beat by beat) with the
// stretcher's state carried across; nothing is sought or flushed between calls.
//
// Why not a Python package: python-stretch's binding seeks, processes and flushes on every call
// (not streaming: audible jumps at every call edge, bench/RESULTS.md "Session 7"), and
// bungee-python crashes on get_latency(). Signalsmith Stretch itself is maintained, MIT, and
// header-only, so this C++ file and the headers are all the build needs (pip install, g++).
//
// A C interface (no Python header): cffi loads it in ABI mode (engine/native.py). The scheduling
// loop is its only caller; nothing here runs on the audio thread.
#include <algorithm>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include "signalsmith/signalsmith-stretch.h"

using Stretch = signalsmith::stretch::SignalsmithStretch<float, std::mt19937>;

struct bl_stretch {
    Stretch stretch;
    int channels;
    std::vector<std::vector<float>> in, out;  // deinterleaved scratch
    std::vector<float *> in_ptr, out_ptr;

    bl_stretch(int channels_, long seed) : stretch(seed), channels(channels_), in(channels_), out(channels_),
                                           in_ptr(channels_), out_ptr(channels_) {}

    void fit(int in_frames, int out_frames) {
        for (int c = 0; c < channels; c++) {
            if ((int)in[c].size() < in_frames) in[c].resize(in_frames);
            if ((int)out[c].size() < out_frames) out[c].resize(out_frames);
            in_ptr[c] = in[c].data();
            out_ptr[c] = out[c].data();
        }
    }

    // Interleaved input into the deinterleaved scratch (sized for `out_frames` of output too).
    void load(const float *interleaved, int in_frames, int out_frames) {
        fit(in_frames, out_frames);
        for (int i = 0; i < in_frames; i++)
            for (int c = 0; c < channels; c++) in[c][i] = interleaved[i * channels + c];
    }
};

extern "C" {

bl_stretch *bl_stretch_new(int channels, int block, int interval, long seed) {
    if (channels <= 0 || block <= 0 || interval <= 0) return nullptr;
    auto *s = new (std::nothrow) bl_stretch(channels, seed);
    if (!s) return nullptr;
    s->stretch.configure(channels, block, interval);
    return s;
}

void bl_stretch_free(bl_stretch *s) { delete s; }

// A deep copy of the whole state (input and output buffers, phases, predictions): rollback keeps
// one per chunk and goes on from it exactly. Re-priming with seek is not enough: away from a
// ratio of 1 the phase vocoder's output phases never rejoin the original's. The portable FFT it
// uses holds only vectors, so the vendored headers' copy constructors are defaulted (README.md).
bl_stretch *bl_stretch_copy(const bl_stretch *s) { return new (std::nothrow) bl_stretch(*s); }

int bl_stretch_input_latency(const bl_stretch *s) { return s->stretch.inputLatency(); }

int bl_stretch_output_latency(const bl_stretch *s) { return s->stretch.outputLatency(); }

// Interleaved float32 in, interleaved float32 out.
void bl_stretch_process(bl_stretch *s, const float *in, int in_frames, float *out, int out_frames) {
    int ch = s->channels;
    s->load(in, in_frames, out_frames);
    s->stretch.process(s->in_ptr.data(), in_frames, s->out_ptr.data(), out_frames);
    for (int i = 0; i < out_frames; i++)
        for (int c = 0; c < ch; c++) out[i * ch + c] = s->out[c][i];
}

}  // extern "C"
