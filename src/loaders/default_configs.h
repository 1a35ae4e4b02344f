// Built-in diffusers configs (JSON text) of the SD 1.5 / 2.1 / XL pipelines and their inpainting
// variants (and the SDXL refiner), used when a single file is loaded without a config folder.
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
extern const char* const kSdxlBaseUnet;
extern const char* const kSdxlVae;
extern const char* const kSdxlBaseTextEncoder;
extern const char* const kSdxlTextEncoder2;
extern const char* const kSdxlScheduler;
extern const char* const kSdxlBaseModelIndex;
extern const char* const kSdxlRefinerUnet;
extern const char* const kSdxlRefinerModelIndex;
extern const char* const kSdxlInpaintUnet;
extern const char* const kSdxlInpaintVae;
extern const char* const kSdxlInpaintTextEncoder;
extern const char* const kSdxlInpaintTextEncoder2;
extern const char* const kSdxlInpaintModelIndex;

}  // namespace diffuse::loaders
