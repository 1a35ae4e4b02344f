// The diffusers configs a single file falls back to, built into the library so that `diffuse`
// needs no data files at run time. Verbatim copies (keys and values) of the public Hugging Face
// model-repo configs of runwayml/stable-diffusion-v1-5, runwayml/stable-diffusion-inpainting,
// stabilityai/stable-diffusion-2-1 and stabilityai/stable-diffusion-2-inpainting (diffusers'
// DIFFUSERS_DEFAULT_PIPELINE_PATHS for the v1, inpainting, v2 and inpainting_v2 model types).
#include "src/loaders/default_configs.h"

namespace diffuse::loaders {

const char* const kSd15Unet =
    R"json({"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":8,"block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":768,"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"downsample_padding":1,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":64,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]})json";
const char* const kSd15Vae =
    R"json({"_class_name":"AutoencoderKL","act_fn":"silu","block_out_channels":[128,256,512,512],"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],"in_channels":3,"latent_channels":4,"layers_per_block":2,"norm_num_groups":32,"out_channels":3,"sample_size":512,"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]})json";
const char* const kSd15TextEncoder =
    R"json({"architectures":["CLIPTextModel"],"attention_dropout":0,"bos_token_id":0,"dropout":0,"eos_token_id":2,"hidden_act":"quick_gelu","hidden_size":768,"initializer_factor":1,"initializer_range":0.02,"intermediate_size":3072,"layer_norm_eps":1e-05,"max_position_embeddings":77,"model_type":"clip_text_model","num_attention_heads":12,"num_hidden_layers":12,"pad_token_id":1,"projection_dim":768,"torch_dtype":"float32","transformers_version":"4.22.0.dev0","vocab_size":49408})json";
const char* const kSd15Scheduler =
    R"json({"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,"num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"trained_betas":null,"clip_sample":false})json";
const char* const kSd15InpaintUnet =
    R"json({"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":8,"block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":768,"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"downsample_padding":1,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":9,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":64,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]})json";
const char* const kSd21Unet =
    R"json({"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":[5,10,20,20],"block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":1024,"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"downsample_padding":1,"dual_cross_attention":false,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"num_class_embeds":null,"only_cross_attention":false,"out_channels":4,"sample_size":96,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],"use_linear_projection":true,"upcast_attention":true})json";
const char* const kSd21Vae =
    R"json({"_class_name":"AutoencoderKL","act_fn":"silu","block_out_channels":[128,256,512,512],"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],"in_channels":3,"latent_channels":4,"layers_per_block":2,"norm_num_groups":32,"out_channels":3,"sample_size":768,"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]})json";
const char* const kSd21TextEncoder =
    R"json({"architectures":["CLIPTextModel"],"attention_dropout":0,"bos_token_id":0,"dropout":0,"eos_token_id":2,"hidden_act":"gelu","hidden_size":1024,"initializer_factor":1,"initializer_range":0.02,"intermediate_size":4096,"layer_norm_eps":1e-05,"max_position_embeddings":77,"model_type":"clip_text_model","num_attention_heads":16,"num_hidden_layers":23,"pad_token_id":1,"projection_dim":512,"torch_dtype":"float32","transformers_version":"4.25.0.dev0","vocab_size":49408})json";
const char* const kSd21Scheduler =
    R"json({"_class_name":"DDIMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,"clip_sample":false,"num_train_timesteps":1000,"prediction_type":"v_prediction","set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"trained_betas":null})json";
const char* const kSd2InpaintUnet =
    R"json({"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":[5,10,20,20],"block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":1024,"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"downsample_padding":1,"dual_cross_attention":false,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":9,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":64,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],"use_linear_projection":true})json";
const char* const kSd2InpaintScheduler =
    R"json({"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,"clip_sample":false,"num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"trained_betas":null})json";

}  // namespace diffuse::loaders
