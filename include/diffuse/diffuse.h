// The public API of diffuse: include this and link diffuse::diffuse.
#pragma once

#include "diffuse/core/device.h"
#include "diffuse/core/dtype.h"
#include "diffuse/core/error.h"
#include "diffuse/core/log.h"
#include "diffuse/core/storage.h"
#include "diffuse/core/tensor.h"
#include "diffuse/core/threads.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/ops.h"
