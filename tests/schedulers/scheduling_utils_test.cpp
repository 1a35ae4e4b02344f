// The shared scheduler math (src/schedulers/scheduling_utils.h) against values computed by
// numpy / scipy / torch (written here with their provenance), and its error handling.
#include "src/schedulers/scheduling_utils.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace diffuse::schedulers {
namespace {

TEST(SchedulingUtils, NumpyLinspaceAndArange) {
  // np.linspace(0, 999, 4) -> [0, 333, 666, 999]; the last element is exactly `stop`.
  EXPECT_EQ(np_linspace(0, 999, 4), (std::vector<double>{0, 333, 666, 999}));
  EXPECT_EQ(np_linspace(2, 5, 1), (std::vector<double>{2}));
  EXPECT_TRUE(np_linspace(0, 1, 0).empty());
  // np.arange(1000, 0, -1000/3): [1000, 666.666..., 333.333...] (3 elements).
  const std::vector<double> a = np_arange(1000, 0, -1000.0 / 3);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_DOUBLE_EQ(a[1], 1000 - 1000.0 / 3);
  EXPECT_EQ(np_arange(0, 5, 1).size(), 5u);
  EXPECT_THROW(np_arange(0, 1, 0), Error);
  // Round half to even, like np.round.
  EXPECT_EQ(np_round(2.5), 2.0);
  EXPECT_EQ(np_round(3.5), 4.0);
  EXPECT_EQ(np_round(-0.5), -0.0);
}

TEST(SchedulingUtils, Interp) {
  const std::vector<double> xp = {0, 1, 2};
  const std::vector<double> fp = {10, 20, 40};
  EXPECT_EQ(np_interp({-1, 0, 0.5, 1.5, 2, 3}, xp, fp),
            (std::vector<double>{10, 10, 15, 30, 40, 40}));
  EXPECT_THROW(np_interp({0}, {0, 1}, {1}), Error);
}

TEST(SchedulingUtils, BetaPpfMatchesScipy) {
  // scipy.stats.beta.ppf(q, 0.6, 0.6) (scipy 1.10): symmetric around 0.5.
  EXPECT_NEAR(beta_ppf(0.5, 0.6, 0.6), 0.5, 1e-15);
  EXPECT_EQ(beta_ppf(0, 0.6, 0.6), 0.0);
  EXPECT_EQ(beta_ppf(1, 0.6, 0.6), 1.0);
  for (double q : {1e-6, 0.01, 0.1, 0.25, 0.7, 0.9, 0.999}) {
    const double x = beta_ppf(q, 0.6, 0.6);
    // I_x near 1 is computed as 1 - tail, so its own rounding is a few 1e-15.
    EXPECT_NEAR(incomplete_beta(x, 0.6, 0.6), q, 4e-14) << q;
    EXPECT_NEAR(beta_ppf(1 - q, 0.6, 0.6), 1 - x, 1e-12) << q;
  }
  // I_x(1, 1) = x and I_x(2, 1) = x^2 (closed forms).
  EXPECT_NEAR(beta_ppf(0.3, 1, 1), 0.3, 1e-15);
  EXPECT_NEAR(beta_ppf(0.49, 2, 1), 0.7, 1e-15);
  EXPECT_THROW(beta_ppf(1.5, 0.6, 0.6), Error);
  EXPECT_THROW(beta_ppf(0.5, -1, 0.6), Error);
}

TEST(SchedulingUtils, BetasAndAlphas) {
  // torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2: first and last are the endpoints.
  const std::vector<float> b = make_betas("T", "scaled_linear", 1000, 0.00085, 0.012, {});
  ASSERT_EQ(b.size(), 1000u);
  EXPECT_NEAR(b.front(), 0.00085, 1e-9);
  EXPECT_NEAR(b.back(), 0.012, 1e-8);
  // squaredcos_cap_v2 is capped at max_beta = 0.999.
  const std::vector<float> c = make_betas("T", "squaredcos_cap_v2", 1000, 0, 0, {});
  EXPECT_FLOAT_EQ(c.back(), 0.999f);
  EXPECT_THROW(make_betas("T", "sigmoid", 10, 0, 1, {}), Error);
  EXPECT_EQ(make_betas("T", "sigmoid", 10, 0, 1, {}, true).size(), 10u);
  EXPECT_THROW(make_betas("T", "cubic", 10, 0, 1, {}), Error);
  EXPECT_THROW(make_betas("T", "linear", 10, 0, 1, std::vector<double>{0.1, 0.2}), Error);
  // Zero terminal SNR: the last alphas_cumprod becomes 0, the first is kept.
  const std::vector<float> z = rescale_zero_terminal_snr(b);
  const std::vector<float> a0 = cumprod_f32(one_minus(b));
  const std::vector<float> a1 = cumprod_f32(one_minus(z));
  EXPECT_EQ(a1.back(), 0.0f);
  EXPECT_NEAR(a1.front(), a0.front(), 1e-7);
}

TEST(SchedulingUtils, SigmaToTInvertsTheTrainingSchedule) {
  const std::vector<float> ac =
      cumprod_f32(one_minus(make_betas("T", "scaled_linear", 1000, 0.00085, 0.012, {})));
  const std::vector<float> s = sigmas_from_alphas_cumprod(ac);
  const std::vector<double> log_s = to_f64(log_f32(s));
  EXPECT_NEAR(sigma_to_t(s[500], log_s), 500, 1e-4);
  EXPECT_NEAR(sigma_to_t(std::sqrt(double(s[10]) * s[11]), log_s), 10.5, 1e-3);
  EXPECT_EQ(sigma_to_t(1e-6, log_s), 0.0);   // clipped below the first training sigma
  EXPECT_EQ(sigma_to_t(1e6, log_s), 999.0);  // and above the last
  // Karras: endpoints exactly sigma_max and sigma_min, decreasing.
  const std::vector<double> k = karras_sigmas(0.03, 14.6, 5);
  EXPECT_NEAR(k.front(), 14.6, 1e-12);
  EXPECT_NEAR(k.back(), 0.03, 1e-14);
  for (std::size_t i = 1; i < k.size(); ++i) EXPECT_LT(k[i], k[i - 1]);
}

TEST(SchedulingUtils, ThresholdSampleIsTorchQuantile) {
  // One batch item of 5 values; quantile(|x|, 0.5) = 3 -> clamp to [-3, 3] / 3.
  const Tensor x = Tensor::from_vector<double>({-5, 1, 2, 3, 4}, {1, 5});
  const std::vector<double> y = values(threshold_sample(x, 0.5, 10));
  EXPECT_EQ(y, (std::vector<double>{-1, 1.0 / 3, 2.0 / 3, 1, 1}));
  // The threshold never goes below 1: small samples are unchanged.
  const Tensor small = Tensor::from_vector<double>({0.1, -0.2, 0.3, 0.05}, {1, 4});
  EXPECT_EQ(values(threshold_sample(small, 0.995, 1.5)), values(small));
  // Linear interpolation between order statistics (rank 0.75 * 4 = 3 -> between 4 and 5).
  const Tensor z = Tensor::from_vector<double>({1, 2, 3, 4, 6}, {1, 5});
  const std::vector<double> q = values(threshold_sample(z, 0.875, 100));  // rank 3.5 -> 5
  EXPECT_DOUBLE_EQ(q[4], 1.0);
  EXPECT_DOUBLE_EQ(q[0], 1.0 / 5);
  EXPECT_THROW(threshold_sample(Tensor::from_vector<double>({1}, {1}), 0.5, 1), Error);
}

TEST(SchedulingUtils, IndexForTimestepAndNoise) {
  EXPECT_EQ(index_for_timestep(5, {9, 5, 5, 1}, "T"), 2u);  // the second of duplicates
  EXPECT_EQ(index_for_timestep(9, {9, 5, 5, 1}, "T"), 0u);
  EXPECT_THROW(index_for_timestep(4, {9, 5, 1}, "T"), Error);
  StepArgs args;
  EXPECT_THROW(draw_noise(args, {1, 2}, DType::f32, "T"), Error);
  args.noise = [](const Shape&, DType dtype) { return Tensor::zeros({3}, dtype); };
  EXPECT_THROW(draw_noise(args, {1, 2}, DType::f32, "T"), Error);  // wrong shape returned
  EXPECT_EQ(timesteps_per_item({7}, 3, "T"), (std::vector<double>{7, 7, 7}));
  EXPECT_THROW(timesteps_per_item({1, 2}, 3, "T"), Error);
}

TEST(SchedulingUtils, RoundTo) {
  EXPECT_EQ(round_to(DType::f64, 0.1), 0.1);
  EXPECT_EQ(round_to(DType::f32, 0.1), static_cast<double>(0.1f));
  EXPECT_EQ(promote(DType::f32, DType::f64), DType::f64);
  EXPECT_EQ(promote(DType::f16, DType::bf16), DType::f32);
  EXPECT_THROW(round_to(DType::i32, 1), Error);
}

}  // namespace
}  // namespace diffuse::schedulers
