#include "pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace nx {
namespace {

// Job hand-off: the caller writes the job, then bumps `generation`; a worker runs tasks of the job
// it was woken for and then acknowledges that generation. A new job is written (under `mu`) only
// once every worker has acknowledged the previous one or sleeps, and a sleeping worker wakes only by
// taking `mu`: no worker ever reads a half-written job. The caller never waits while holding `mu`.
std::atomic<int> spin_us{3000};   // how long an idle worker spins before it sleeps

struct Worker {
    std::thread thread;
    std::atomic<uint64_t> ack{0};
    std::atomic<bool> asleep{false};
};

struct Pool {
    std::vector<std::unique_ptr<Worker>> workers;
    std::atomic<uint64_t> generation{0};
    std::atomic<int> next{0}, done{0};
    std::atomic<bool> stop{false};
    int n_tasks = 0;
    void (*fn)(void*, int) = nullptr;
    void* ctx = nullptr;
    std::mutex mu;
    std::condition_variable cv;

    void work() {
        for (int t; (t = next.fetch_add(1, std::memory_order_acq_rel)) < n_tasks;) {
            fn(ctx, t);
            done.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    void loop(Worker* w) {
        uint64_t seen = w->ack.load();
        while (true) {
            auto start = std::chrono::steady_clock::now();
            for (int spins = 1; generation.load(std::memory_order_acquire) == seen && !stop.load(); spins++) {
                if (spins % 1024 == 0 && std::chrono::steady_clock::now() - start > std::chrono::microseconds(spin_us.load(std::memory_order_relaxed))) {
                    std::unique_lock<std::mutex> lock(mu);
                    w->asleep.store(true);
                    cv.wait(lock, [&] { return generation.load() != seen || stop.load(); });
                    w->asleep.store(false);
                }
            }
            if (stop.load()) return;
            seen = generation.load(std::memory_order_acquire);
            work();
            w->ack.store(seen, std::memory_order_release);
        }
    }

    void resize(int n) {
        shutdown();
        stop = false;
        uint64_t g = generation.load();
        for (int i = 1; i < n; i++) {
            workers.push_back(std::make_unique<Worker>());
            Worker* w = workers.back().get();
            w->ack.store(g);
            w->thread = std::thread([this, w] { loop(w); });
        }
    }

    void shutdown() {
        {
            std::lock_guard<std::mutex> lock(mu);
            stop = true;
        }
        cv.notify_all();
        for (auto& w : workers) w->thread.join();
        workers.clear();
    }

    bool settled(uint64_t g) const {   // every worker has acknowledged job g, or sleeps
        for (auto& w : workers)
            if (w->ack.load(std::memory_order_acquire) != g && !w->asleep.load()) return false;
        return true;
    }

    void run(int n, void (*f)(void*, int), void* c) {
        uint64_t g = generation.load();
        std::unique_lock<std::mutex> lock(mu, std::defer_lock);
        while (true) {   // wait without the lock (a worker may need it to go to sleep), then make sure under it
            while (!settled(g)) {
            }
            lock.lock();   // holding `mu`, no sleeping worker can wake and no settled one can start
            if (settled(g)) break;
            lock.unlock();
        }
        fn = f; ctx = c; n_tasks = n;
        done.store(0, std::memory_order_relaxed);
        next.store(0, std::memory_order_release);
        generation.store(g + 1, std::memory_order_release);
        lock.unlock();
        cv.notify_all();
        work();
        while (done.load(std::memory_order_acquire) < n) {
        }
    }

    ~Pool() { shutdown(); }
};

Pool& pool() {
    static Pool p;
    return p;
}
int n_threads = 1;

}  // namespace

void pool_set_threads(int n) {
    if (n < 1) n = 1;
    if (n == n_threads && (int)pool().workers.size() == n - 1) return;
    n_threads = n;
    pool().resize(n);
}
int pool_threads() { return n_threads; }
void pool_set_spin(int us) { spin_us.store(us < 0 ? 0 : us); }
void pool_run(int n_tasks, void (*fn)(void*, int), void* ctx) { pool().run(n_tasks, fn, ctx); }

}  // namespace nx
