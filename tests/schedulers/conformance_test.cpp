// Scheduler conformance against diffusers v0.31 (shared/reference/<root>/schedulers, format in
// shared/reference/README.md): every case of every class of every reference root is rebuilt
// through make_scheduler(class, init_config) and compared (timesteps, sigmas, init_noise_sigma,
// num_inference_steps, the scale_model_input factor, the stored loop samples, the final sample
// and pred_original_sample, add_noise), and every `skipped` entry (a diffusers error) must raise
// diffuse::Error. One test per class; each prints how many cases passed and why any was skipped.
//
// Tolerance: |actual - expected| <= rtol * (|expected| + max|expected over the tensor|), i.e. a
// relative tolerance with an absolute floor at the tensor's scale (loop samples cross zero).
// rtol is 1e-6 (README: float64 loops with diffusers' float32 upcasts) and 1e-5 for the
// classes listed in kLooseClasses (second-order or multistep solvers, whose float32 upcasts
// compound) and for any loop of more than 25 steps.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "diffuse/diffuse.h"
#include "diffuse/schedulers/scheduler.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Classes with diffusers reference data that diffuse does not port (not in issue 4's scope).
const std::map<std::string, std::string>& not_ported() {
  static const std::map<std::string, std::string> m = {
      {"CMStochasticIterativeScheduler", "consistency-model sampler, not in issue 4's scope"},
      {"CogVideoXDDIMScheduler", "CogVideoX-specific, not in issue 4's scope"},
      {"CogVideoXDPMScheduler", "CogVideoX-specific step(old_pred, ...) API, not in issue 4"},
      {"UnCLIPScheduler", "UnCLIP/Karlo-specific step(prev_timestep) API, not in issue 4"},
      {"DDPMWuerstchenScheduler", "Wuerstchen-specific (continuous t in [0,1]), not in issue 4"},
      {"DDPMParallelScheduler", "ParaDiGMS batch_step_no_noise variant, not in issue 4's scope"},
      {"DDIMParallelScheduler", "ParaDiGMS batch_step_no_noise variant, not in issue 4's scope"},
      {"DPMSolverMultistepInverseScheduler", "inversion variant, not in issue 4's scope"},
      {"CosineDPMSolverMultistepScheduler", "Stable Audio sampler (torchsde), not in issue 4"},
  };
  return m;
}

// Issue 4's list: these must be registered.
const std::set<std::string>& in_scope() {
  static const std::set<std::string> s = {"DDPMScheduler",
                                          "DDIMScheduler",
                                          "DDIMInverseScheduler",
                                          "PNDMScheduler",
                                          "IPNDMScheduler",
                                          "LMSDiscreteScheduler",
                                          "EulerDiscreteScheduler",
                                          "EulerAncestralDiscreteScheduler",
                                          "HeunDiscreteScheduler",
                                          "KDPM2DiscreteScheduler",
                                          "KDPM2AncestralDiscreteScheduler",
                                          "DPMSolverMultistepScheduler",
                                          "DPMSolverSinglestepScheduler",
                                          "DPMSolverSDEScheduler",
                                          "DEISMultistepScheduler",
                                          "UniPCMultistepScheduler",
                                          "SASolverScheduler",
                                          "LCMScheduler",
                                          "TCDScheduler",
                                          "EDMEulerScheduler",
                                          "EDMDPMSolverMultistepScheduler",
                                          "FlowMatchEulerDiscreteScheduler",
                                          "FlowMatchHeunDiscreteScheduler"};
  return s;
}

// Second-order / multistep classes compared at rtol 1e-5 (README: "1e-5 for long/2nd-order").
const std::set<std::string>& loose_classes() {
  static const std::set<std::string> s = {"HeunDiscreteScheduler",
                                          "KDPM2DiscreteScheduler",
                                          "KDPM2AncestralDiscreteScheduler",
                                          "LMSDiscreteScheduler",
                                          "DPMSolverMultistepScheduler",
                                          "DPMSolverSinglestepScheduler",
                                          "DPMSolverSDEScheduler",
                                          "DEISMultistepScheduler",
                                          "UniPCMultistepScheduler",
                                          "SASolverScheduler",
                                          "EDMDPMSolverMultistepScheduler",
                                          "FlowMatchHeunDiscreteScheduler",
                                          "PNDMScheduler",
                                          "IPNDMScheduler"};
  return s;
}

struct ClassFile {
  fs::path root;
  fs::path json_path;
  fs::path tensors_path;
  int64_t index_cases = -1;  // the case count index.json declares, -1 when unknown
};

fs::path schedulers_dir(const fs::path& root) {
  return root / "schedulers";
}

// Every (class -> files) over all roots. A root's schedulers/index.json names its classes;
// without one, every <Class>.json beside a <Class>.safetensors counts.
std::map<std::string, std::vector<ClassFile>> discover() {
  std::map<std::string, std::vector<ClassFile>> out;
  for (const fs::path& root : testing::reference_roots()) {
    const fs::path dir = schedulers_dir(root);
    if (!fs::is_directory(dir)) continue;
    if (fs::exists(dir / "index.json")) {
      const json index = testing::read_json(dir / "index.json");
      for (const json& c : index.at("classes")) {
        const std::string name = c.at("class").get<std::string>();
        const std::string jf = c.value("json", name + ".json");
        const std::string tf = c.value("tensors", name + ".safetensors");
        out[name].push_back({root, dir / jf, dir / tf, c.value("cases", -1)});
      }
    } else {
      for (const auto& e : fs::directory_iterator(dir)) {
        const fs::path p = e.path();
        const std::string stem = p.stem().string();
        if (p.extension() != ".json" || stem.empty() || stem[0] == '_') continue;
        fs::path tp = p;
        tp.replace_extension(".safetensors");
        if (fs::exists(tp)) out[stem].push_back({root, p, tp, -1});
      }
    }
  }
  return out;
}

std::vector<std::string> class_params() {
  std::set<std::string> names;
  for (const auto& [name, files] : discover()) names.insert(name);
  for (const std::string& n : scheduler_class_names()) names.insert(n);
  for (const std::string& n : in_scope()) names.insert(n);
  return {names.begin(), names.end()};
}

double num(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
    if (s == "nan") return NAN;
  }
  throw Error("conformance: expected a number, got " + v.dump());
}

std::vector<double> nums(const json& v) {
  std::vector<double> out;
  for (const json& e : v) out.push_back(num(e));
  return out;
}

// rtol with an absolute floor at the scale of `expected`; non-finite values must match exactly.
std::string compare_values(const std::vector<double>& actual, const std::vector<double>& expected,
                           double rtol) {
  std::ostringstream os;
  os.precision(17);
  if (actual.size() != expected.size()) {
    os << "length " << actual.size() << " vs expected " << expected.size();
    return os.str();
  }
  double scale = 0;
  for (double e : expected)
    if (std::isfinite(e)) scale = std::max(scale, std::fabs(e));
  double worst = 0;
  std::ptrdiff_t worst_i = -1;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i];
    const double e = expected[i];
    if (!std::isfinite(e) || !std::isfinite(a)) {
      const bool same = (std::isnan(a) && std::isnan(e)) || a == e;
      if (!same) {
        os << "non-finite mismatch at [" << i << "]: " << a << " vs expected " << e;
        return os.str();
      }
      continue;
    }
    const double err = std::fabs(a - e) / (std::fabs(e) + scale);
    if (err > worst) {
      worst = err;
      worst_i = static_cast<std::ptrdiff_t>(i);
    }
  }
  if (worst > rtol) {
    os << "max relative error " << worst << " > " << rtol << " at [" << worst_i
       << "]: " << actual[static_cast<std::size_t>(worst_i)] << " vs expected "
       << expected[static_cast<std::size_t>(worst_i)];
    return os.str();
  }
  return {};
}

std::string compare_tensors(const Tensor& actual, const Tensor& expected, double rtol) {
  if (!actual.defined()) return "result is undefined";
  if (actual.shape() != expected.shape()) {
    return "shape " + shape_str(actual.shape()) + " vs expected " + shape_str(expected.shape());
  }
  return compare_values(actual.to_vector<double>(), expected.to_vector<double>(), rtol);
}

struct Inputs {
  Tensor init_noise;
  Tensor noise_bank;
  Tensor add_noise_original;
  Tensor add_noise_noise;
};

DType dtype_of(const std::string& name) {
  if (name == "float64") return DType::f64;
  if (name == "float32") return DType::f32;
  if (name == "float16") return DType::f16;
  if (name == "bfloat16") return DType::bf16;
  throw Error("conformance: unknown sample_dtype '" + name + "'");
}

// The fake denoiser of the reference: c * x + 0.05 * sin(x), c = 0.1 * cos(t / 100) in double,
// tensor math in x's dtype (Python scalars are rounded to it).
Tensor model_fn(const Tensor& x, double t) {
  const double c = 0.1 * std::cos(t / 100.0);
  std::vector<double> v = x.to_vector<double>();
  if (x.dtype() == DType::f64) {
    for (double& e : v) e = c * e + 0.05 * std::sin(e);
  } else {
    const float cf = static_cast<float>(c);
    for (double& e : v) {
      const float xf = static_cast<float>(e);
      const float a = cf * xf;
      const float b = 0.05f * std::sin(xf);
      e = static_cast<double>(a + b);
    }
  }
  return Tensor::from_vector(v, x.shape(), x.dtype());
}

SetTimestepsArgs timesteps_args(const json& num_steps, const json& kwargs) {
  SetTimestepsArgs a;
  if (!num_steps.is_null()) a.num_inference_steps = num_steps.get<int64_t>();
  for (const auto& [k, v] : kwargs.items()) {
    if (k == "timesteps") {
      a.timesteps = nums(v);
    } else if (k == "sigmas") {
      a.sigmas = nums(v);
    } else if (k == "mu") {
      a.mu = num(v);
    } else if (k == "strength") {
      a.strength = num(v);
    } else {
      throw Error("conformance: unsupported set_timesteps kwarg '" + k + "'");
    }
  }
  return a;
}

// A noise source returning noise_bank[k] for the k-th call, cast and reshaped.
struct BankNoise {
  Tensor bank;
  int64_t calls = 0;
  NoiseSource source() {
    return [this](const Shape& shape, DType dtype) {
      if (calls >= bank.size(0)) throw Error("conformance: noise bank exhausted");
      Tensor n = bank.select(0, calls++);
      return n.reshape(shape).to(dtype).clone();
    };
  }
};

StepArgs step_args(const json& kwargs, BankNoise& noise) {
  StepArgs a;
  for (const auto& [k, v] : kwargs.items()) {
    if (k == "eta") {
      a.eta = num(v);
    } else if (k == "use_clipped_model_output") {
      a.use_clipped_model_output = v.get<bool>();
    } else if (k == "s_churn") {
      a.s_churn = num(v);
    } else if (k == "s_tmin") {
      a.s_tmin = num(v);
    } else if (k == "s_tmax") {
      a.s_tmax = num(v);
    } else if (k == "s_noise") {
      a.s_noise = num(v);
    } else if (k == "order") {
      a.order = v.get<int64_t>();
    } else {
      throw Error("conformance: unsupported step kwarg '" + k + "'");
    }
  }
  a.noise = noise.source();
  return a;
}

struct ClassReport {
  int passed = 0;
  int errors_reproduced = 0;
  std::map<std::string, int> skipped;  // reason -> count
};

// Runs one reference case; returns "" on success or what differed.
std::string run_case(const std::string& cls, const json& c, const Inputs& in,
                     const SafetensorsFile& tensors, double class_rtol) {
  const std::string where =
      "case " + c.at("id").get<std::string>() + " (" + c.at("tag").get<std::string>() + "): ";
  std::unique_ptr<Scheduler> s = make_scheduler(cls, c.at("init_config"));
  s->set_timesteps(timesteps_args(c.at("num_inference_steps"), c.at("set_timesteps_kwargs")));
  const json& loop = c.at("loop");
  const int64_t iterations = loop.at("num_iterations").get<int64_t>();
  const double rtol = iterations > 25 ? std::max(class_rtol, 1e-5) : class_rtol;

  // 1. Schedule.
  if (auto e = compare_values(s->timesteps(), nums(c.at("timesteps")), rtol); !e.empty())
    return where + "timesteps: " + e;
  if (!c.at("sigmas").is_null()) {
    if (!s->sigmas()) return where + "sigmas: expected a schedule, the port has none";
    if (auto e = compare_values(*s->sigmas(), nums(c.at("sigmas")), rtol); !e.empty())
      return where + "sigmas: " + e;
  }
  const std::optional<double> ins = s->init_noise_sigma();
  if (c.at("init_noise_sigma").is_null()) {
    if (ins) return where + "init_noise_sigma: expected none";
  } else {
    if (!ins) return where + "init_noise_sigma: expected a value, the port has none";
    if (auto e = compare_values({*ins}, {num(c.at("init_noise_sigma"))}, rtol); !e.empty())
      return where + "init_noise_sigma: " + e;
  }
  if (c.contains("num_inference_steps_after") && !c.at("num_inference_steps_after").is_null() &&
      s->num_inference_steps() != c.at("num_inference_steps_after").get<int64_t>()) {
    return where +
           "num_inference_steps after set_timesteps: " + std::to_string(s->num_inference_steps()) +
           " vs expected " + c.at("num_inference_steps_after").dump();
  }
  if (s->order() != c.at("order").get<int>()) {
    return where + "order " + std::to_string(s->order()) + " vs expected " + c.at("order").dump();
  }

  // 2. The loop.
  const DType dtype = dtype_of(c.at("sample_dtype").get<std::string>());
  BankNoise noise{in.noise_bank};
  const StepArgs args = step_args(c.at("step_kwargs"), noise);
  Tensor sample = in.init_noise.to(dtype);
  if (ins) {
    std::vector<double> v = sample.to_vector<double>();
    for (double& e : v) e *= *ins;
    sample = Tensor::from_vector(v, sample.shape(), dtype);
  }
  const std::vector<double> loop_t = nums(loop.at("t"));
  const std::vector<double> scales = nums(loop.at("model_input_scale"));
  if (static_cast<int64_t>(s->timesteps().size()) != iterations ||
      static_cast<int64_t>(loop_t.size()) != iterations) {
    return where + "number of loop iterations: " + std::to_string(s->timesteps().size()) +
           " timesteps vs expected " + std::to_string(iterations);
  }
  if (auto e = compare_values(s->timesteps(), loop_t, rtol); !e.empty())
    return where + "loop timesteps: " + e;
  std::map<int64_t, std::string> stored;
  for (const auto& [k, v] : loop.at("stored_steps").items()) stored[std::stoll(k)] = v;
  const Tensor ones = Tensor::full(sample.shape(), 1.0, dtype);
  SchedulerOutput out;
  for (int64_t i = 0; i < iterations; ++i) {
    const double t = s->timesteps()[static_cast<std::size_t>(i)];
    const std::string at =
        where + "iteration " + std::to_string(i) + " (t=" + std::to_string(t) + "): ";
    const double scale = s->scale_model_input(ones, t).to_vector<double>()[0];
    if (auto e = compare_values({scale}, {scales[static_cast<std::size_t>(i)]}, rtol); !e.empty())
      return at + "scale_model_input factor: " + e;
    const Tensor x = s->scale_model_input(sample, t);
    const Tensor eps = model_fn(x, t);
    out = s->step(eps, t, sample, args);
    sample = out.prev_sample;
    if (!sample.defined()) return at + "step returned no prev_sample";
    if (auto it = stored.find(i); it != stored.end()) {
      if (auto e = compare_tensors(sample, tensors.get(it->second), rtol); !e.empty())
        return at + "prev_sample: " + e;
    }
  }
  if (auto e = compare_tensors(sample, tensors.get(loop.at("final").get<std::string>()), rtol);
      !e.empty())
    return where + "final sample: " + e;
  if (loop.contains("final_extra")) {
    for (const auto& [k, v] : loop.at("final_extra").items()) {
      if (auto e =
              compare_tensors(out.pred_original_sample, tensors.get(v.get<std::string>()), rtol);
          !e.empty())
        return where + "final " + k + ": " + e;
    }
  }
  bool finite = true;
  for (double v : sample.to_vector<double>()) finite = finite && std::isfinite(v);
  if (finite != c.at("finite").get<bool>()) {
    return where + "final sample finiteness " + (finite ? "true" : "false") + " vs expected " +
           c.at("finite").dump();
  }
  if (noise.calls != c.at("noise_calls").get<int64_t>()) {
    return where + "noise draws " + std::to_string(noise.calls) + " vs expected " +
           c.at("noise_calls").dump();
  }

  // 3. add_noise on a fresh scheduler after set_timesteps, one for all entries of the case in
  // order, as the reference did (this matters where add_noise has state: FlowMatchHeun's
  // scale_noise fixes the step index on its first call, so later entries reuse that sigma).
  if (c.contains("add_noise") && !c.at("add_noise").empty()) {
    std::unique_ptr<Scheduler> f = make_scheduler(cls, c.at("init_config"));
    f->set_timesteps(timesteps_args(c.at("num_inference_steps"), c.at("set_timesteps_kwargs")));
    for (const json& a : c.at("add_noise")) {
      const std::size_t j = a.at("timestep_index").get<std::size_t>();
      if (j >= f->timesteps().size()) return where + "add_noise: timestep index out of range";
      const Tensor r = f->add_noise(in.add_noise_original.to(dtype), in.add_noise_noise.to(dtype),
                                    {f->timesteps()[j]});
      if (auto e = compare_tensors(r, tensors.get(a.at("tensor").get<std::string>()), rtol);
          !e.empty())
        return where + a.at("method").get<std::string>() + " at timestep index " +
               std::to_string(j) + ": " + e;
    }
  }
  return {};
}

// A diffusers error case: constructing, setting timesteps or stepping must throw diffuse::Error.
std::string run_error_case(const std::string& cls, const json& base_overrides, const json& c,
                           const Inputs& in) {
  const std::string where = "skipped case " + c.at("id").get<std::string>() + " (" +
                            c.at("tag").get<std::string>() +
                            ", diffusers: " + c.value("error", std::string("?")) + "): ";
  json config = base_overrides.is_object() ? base_overrides : json::object();
  for (const auto& [k, v] : c.at("overrides").items()) config[k] = v;
  try {
    std::unique_ptr<Scheduler> s = make_scheduler(cls, config);
    s->set_timesteps(timesteps_args(c.value("num_inference_steps", json()),
                                    c.value("set_timesteps_kwargs", json::object())));
    BankNoise noise{in.noise_bank};
    const StepArgs args = step_args(c.value("step_kwargs", json::object()), noise);
    Tensor sample = in.init_noise.clone();
    for (double t : std::vector<double>(s->timesteps())) {
      const Tensor x = s->scale_model_input(sample, t);
      sample = s->step(model_fn(x, t), t, sample, args).prev_sample;
    }
  } catch (const Error&) {
    return {};
  }
  return where + "diffusers raised, diffuse did not";
}

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, AllCases) {
  const std::string cls = GetParam();
  const auto files = discover();
  const auto names = scheduler_class_names();
  const bool registered = std::find(names.begin(), names.end(), cls) != names.end();
  if (!registered) {
    if (in_scope().count(cls)) {
      FAIL() << cls << " is in issue 4's scope but make_scheduler does not know it";
    }
    const auto it = not_ported().find(cls);
    const std::string why = it != not_ported().end() ? it->second : "no port in diffuse";
    std::printf("[ conformance ] %s: all cases skipped: %s\n", cls.c_str(), why.c_str());
    GTEST_SKIP() << cls << ": " << why;
  }
  const auto fit = files.find(cls);
  if (fit == files.end()) {
    std::printf("[ conformance ] %s: no reference data in any root\n", cls.c_str());
    GTEST_SKIP() << cls << ": no reference data in any root";
  }
  const double class_rtol = loose_classes().count(cls) ? 1e-5 : 1e-6;
  for (const ClassFile& f : fit->second) {
    const json doc = testing::read_json(f.json_path);
    const SafetensorsFile tensors = SafetensorsFile::open(f.tensors_path);
    const SafetensorsFile inputs_file = SafetensorsFile::open(
        schedulers_dir(f.root) / doc.value("inputs_file", std::string("_inputs.safetensors")));
    Inputs in{inputs_file.get("init_noise"), inputs_file.get("noise_bank"),
              inputs_file.get("add_noise_original"), inputs_file.get("add_noise_noise")};
    ClassReport rep;
    for (const json& c : doc.at("cases")) {
      if (c.value("noise_mode", std::string("none")) == "torchsde") {
        ++rep.skipped["noise from a real torchsde Brownian tree cannot be reproduced"];
        continue;
      }
      std::string err;
      try {
        err = run_case(cls, c, in, tensors, class_rtol);
      } catch (const std::exception& e) {
        err = "case " + c.at("id").get<std::string>() + " (" + c.at("tag").get<std::string>() +
              "): threw: " + e.what();
      }
      if (err.empty()) {
        ++rep.passed;
      } else {
        ADD_FAILURE() << cls << " [" << f.root.string() << "] " << err;
      }
    }
    for (const json& c : doc.value("skipped", json::array())) {
      std::string err;
      try {
        err = run_error_case(cls, doc.value("base_config_overrides", json::object()), c, in);
      } catch (const std::exception& e) {
        err = std::string("skipped case ") + c.at("id").get<std::string>() +
              ": unexpected non-diffuse exception: " + e.what();
      }
      if (err.empty()) {
        ++rep.errors_reproduced;
      } else {
        ADD_FAILURE() << cls << " [" << f.root.string() << "] " << err;
      }
    }
    std::printf("[ conformance ] %s [%s]: %d/%zu cases passed, %d/%zu diffusers errors raised",
                cls.c_str(), f.root.filename().string().c_str(), rep.passed, doc.at("cases").size(),
                rep.errors_reproduced, doc.value("skipped", json::array()).size());
    for (const auto& [why, n] : rep.skipped) std::printf(", %d skipped (%s)", n, why.c_str());
    const int64_t in_file =
        static_cast<int64_t>(doc.at("cases").size() + doc.value("skipped", json::array()).size());
    if (f.index_cases >= 0 && f.index_cases != in_file &&
        f.index_cases != static_cast<int64_t>(doc.at("cases").size())) {
      std::printf(" [index.json declares %lld cases; the file holds %lld: all of them were run]",
                  static_cast<long long>(f.index_cases), static_cast<long long>(in_file));
    }
    std::printf("\n");
  }
}

INSTANTIATE_TEST_SUITE_P(Schedulers, Conformance, ::testing::ValuesIn(class_params()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace diffuse
