// The functional op API every model calls. Each op checks its arguments (throwing
// diffuse::Error that names the op, the shapes and the dtypes) and dispatches on the device.
#pragma once

#include "diffuse/ops/activation.h"
#include "diffuse/ops/activation_kind.h"
#include "diffuse/ops/attention.h"
#include "diffuse/ops/broadcast.h"
#include "diffuse/ops/elementwise.h"
#include "diffuse/ops/embedding.h"
#include "diffuse/ops/linalg.h"
#include "diffuse/ops/norm.h"
#include "diffuse/ops/reduce.h"
#include "diffuse/ops/shape.h"
