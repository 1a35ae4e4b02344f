// Built-in diffusers configs (JSON text) of the SD 1.5 / 2.1 pipelines and their inpainting
// variants, used when a single file is loaded without a config folder.
#pragma once

namespace diffuse::loaders {

extern const char* const kSd15Unet;
extern const char* const kSd15Vae;
extern const char* const kSd15TextEncoder;
extern const char* const kSd15Scheduler;
extern const char* const kSd15InpaintUnet;
extern const char* const kSd21Unet;
extern const char* const kSd21Vae;
extern const char* const kSd21TextEncoder;
extern const char* const kSd21Scheduler;
extern const char* const kSd2InpaintUnet;
extern const char* const kSd2InpaintScheduler;

}  // namespace diffuse::loaders
