// The kernels for the generic instruction set: kernels.inc compiled in namespace generic.
// Library headers come first, outside the target pragma, so that no library code is built for it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "ops.h"
#include "pool.h"

#define NX_NS generic
#include "kernels.inc"
namespace generic {
bool supported() { return true; }
}
