// A small thread pool for the kernels: `parallel(n, fn)` runs fn(task) for task in [0, n) on every
// thread, the caller included. Tasks are handed out one at a time; each task writes outputs of its
// own, so results never depend on which thread ran what. Workers spin briefly after a job (decode
// steps come back-to-back) and then sleep, leaving the cores to torch's threads during prefill.
#pragma once
#include <type_traits>

namespace nx {
void pool_set_threads(int n);
int pool_threads();
void pool_set_spin(int us);   // microseconds an idle worker spins before sleeping (3000 by default)
void pool_run(int n_tasks, void (*fn)(void*, int), void* ctx);

template <class F>
inline void parallel(int n_tasks, F&& f) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || pool_threads() == 1) {
        for (int t = 0; t < n_tasks; t++) f(t);
        return;
    }
    using Fn = std::remove_reference_t<F>;
    pool_run(n_tasks, [](void* c, int t) { (*static_cast<Fn*>(c))(t); }, (void*)&f);
}
}  // namespace nx
