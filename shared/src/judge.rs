//! The canary judge (`gates.analysis`): the new colour's target group against the stable one's,
//! over the same minutes, from per-minute ALB samples (requests, target 5XX, p99 response time).
//!
//! Each metric is a one-sided Mann-Whitney U test with the margin built in: the new colour fails
//! when its per-minute error rates exceed the stable colour's *plus* `max_error_rate_increase`,
//! or its per-minute p99s exceed the stable colour's *times* `1 + max_latency_increase`, with
//! the configured confidence. A rank test assumes nothing of the distribution (latencies and
//! error rates are not normal), and the margin makes a tiny but significant difference no fail.
//! Below `min_requests` on the new colour there is no verdict: the step waits, and never passes
//! for lack of data (the registration's `no_data` policy decides after the bake).
//!
//! Pure: the samples come from one `GetMetricData` call (`ports::MetricsReader`).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// The registration's `gates.analysis`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Absolute increase of the error rate (0.01: one percentage point) the new colour may have.
    #[serde(default = "default_error_margin")]
    pub max_error_rate_increase: f64,
    /// Relative increase of the p99 response time (0.25: a quarter slower) it may have.
    #[serde(default = "default_latency_margin")]
    pub max_latency_increase: f64,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    #[serde(default)]
    pub no_data: NoData,
}

/// What a step whose bake ended without `min_requests` on the new colour does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    #[default]
    Fail,
    Pass,
}

fn default_min_requests() -> u64 {
    100
}
fn default_error_margin() -> f64 {
    0.01
}
fn default_latency_margin() -> f64 {
    0.25
}
fn default_confidence() -> f64 {
    0.95
}

impl Analysis {
    /// Why the settings cannot work, naming the field.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.min_requests == 0 || self.min_requests > 10_000_000 {
            return Err(("gates.analysis.min_requests", "must be 1 to 10000000"));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate_increase) {
            return Err((
                "gates.analysis.max_error_rate_increase",
                "must be a fraction from 0 to 1 (0.01 is one percentage point)",
            ));
        }
        if !(0.0..=10.0).contains(&self.max_latency_increase) {
            return Err((
                "gates.analysis.max_latency_increase",
                "must be a fraction from 0 to 10 (0.25 is a quarter slower)",
            ));
        }
        if !(0.5..=0.999).contains(&self.confidence) {
            return Err(("gates.analysis.confidence", "must be from 0.5 to 0.999"));
        }
        Ok(())
    }
}

/// One minute of one target group, as CloudWatch reports it. A minute CloudWatch has no
/// datapoint for is absent; a missing 5XX count in a minute with requests means none failed
/// (CloudWatch writes no datapoint for a zero count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Minute {
    pub requests: f64,
    pub errors: Option<f64>,
    /// TargetResponseTime p99, seconds.
    pub p99: Option<f64>,
}

/// Both colours' minutes over the same window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    pub canary: Vec<Minute>,
    pub stable: Vec<Minute>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too few requests on the new colour to judge.
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NoData => "no-data",
        }
    }
}

/// What one colour's samples add up to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// Minutes with requests.
    pub minutes: usize,
    pub error_rate: f64,
    /// The median of the per-minute p99s, seconds.
    pub p99: Option<f64>,
}

/// A verdict with its figures, as the audit trail and the alerts show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub canary: Figures,
    pub stable: Figures,
    /// One-sided p-values of "the new colour is worse beyond the margin", where tested.
    pub error_p: Option<f64>,
    pub latency_p: Option<f64>,
    pub summary: String,
}

/// Which look at a step this is. The reconcile loop looks every minute of a step's bake (a
/// clearly worse colour is rolled back at once) and once more at its end; each look runs three
/// tests (errors minute by minute, errors over all requests, p99). So that a colour that is not
/// worse beyond the margins is failed at most `1 - confidence` of the time over a whole step,
/// the error rate is split (Bonferroni): half for the look at the end, half shared by the looks
/// during the bake, and each look's share by its three tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Look {
    During { bake_minutes: u32 },
    End,
}

impl Look {
    /// The significance each of a look's tests is held to.
    fn test_alpha(self, confidence: f64) -> f64 {
        let alpha = 1.0 - confidence;
        let look = match self {
            Look::End => alpha / 2.0,
            Look::During { bake_minutes } => alpha / (2.0 * f64::from(bake_minutes.max(1))),
        };
        look / 3.0
    }
}

impl Judgement {
    /// No verdict, for a reason found before any sample was read (the target groups to compare
    /// cannot be told apart, say): the `no_data` policy decides after the bake, as for too few
    /// requests.
    pub fn no_data(why: &str) -> Judgement {
        let none = figures(&[]);
        Judgement {
            verdict: Verdict::NoData,
            canary: none.clone(),
            stable: none,
            error_p: None,
            latency_p: None,
            summary: format!("canary judge {}: {why}", Verdict::NoData.as_str()),
        }
    }
}

/// The look at the end of a step's bake (see `judge_look`).
pub fn judge(analysis: &Analysis, samples: &Samples) -> Judgement {
    judge_look(analysis, samples, Look::End)
}

/// Judges the new colour against the stable one at `look`.
pub fn judge_look(analysis: &Analysis, samples: &Samples, look: Look) -> Judgement {
    let canary = clean(&samples.canary);
    let stable = clean(&samples.stable);
    let (cf, sf) = (figures(&canary), figures(&stable));
    let alpha = look.test_alpha(analysis.confidence);
    // Kept under the record's 240-character reason bound: verdict, why, figures, p-values.
    let figures_text = format!(
        "new {} errors of {} requests, p99 {} ({} min); stable {} of {}, p99 {} ({} min)",
        percent(cf.error_rate),
        cf.requests,
        ms(cf.p99),
        cf.minutes,
        percent(sf.error_rate),
        sf.requests,
        ms(sf.p99),
        sf.minutes
    );
    let done = |verdict: Verdict, error_p: Option<f64>, latency_p: Option<f64>, why: String| {
        let p_text = if error_p.is_some() || latency_p.is_some() {
            format!(
                "; p errors {}, latency {}",
                p_fmt(error_p),
                p_fmt(latency_p)
            )
        } else {
            String::new()
        };
        Judgement {
            verdict,
            canary: cf.clone(),
            stable: sf.clone(),
            error_p,
            latency_p,
            summary: format!(
                "canary judge {}: {why}. {figures_text}{p_text}",
                verdict.as_str()
            ),
        }
    };
    if cf.requests < analysis.min_requests {
        let why = format!(
            "{} of {} requests needed on the new colour",
            cf.requests, analysis.min_requests
        );
        return done(Verdict::NoData, None, None, why);
    }
    if sf.minutes == 0 {
        // Nothing to compare with: the new colour is held to the margin alone.
        let verdict = if cf.error_rate > analysis.max_error_rate_increase {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let why = format!(
            "no stable traffic to compare with; new error rate against the {} margin alone",
            percent(analysis.max_error_rate_increase)
        );
        return done(verdict, None, None, why);
    }
    let rate = |m: &Minute| m.errors.unwrap_or(0.0) / m.requests;
    let canary_rates: Vec<f64> = canary
        .iter()
        .map(|m| rate(m) - analysis.max_error_rate_increase)
        .collect();
    let stable_rates: Vec<f64> = stable.iter().map(rate).collect();
    // Errors are judged twice: minute by minute (the rank test, robust to a bad minute on
    // either side), and over all requests (a one-sided test of the two proportions, which has
    // power from the first minutes on: a few minutes cannot make a rank test significant, and
    // a canary failing every request must not pass for want of them). Worse by either is worse.
    let error_p = match (
        mann_whitney_greater(&canary_rates, &stable_rates),
        proportion_greater(&cf, &sf, analysis.max_error_rate_increase),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let scale = 1.0 + analysis.max_latency_increase;
    let canary_p99: Vec<f64> = canary
        .iter()
        .filter_map(|m| m.p99)
        .map(|p| p / scale)
        .collect();
    let stable_p99: Vec<f64> = stable.iter().filter_map(|m| m.p99).collect();
    let latency_p = mann_whitney_greater(&canary_p99, &stable_p99);
    let errors_worse = error_p.is_some_and(|p| p < alpha);
    let latency_worse = latency_p.is_some_and(|p| p < alpha);
    // Too few minutes for the rank test to reach the confidence at all: a p99 that looks worse
    // beyond the margin is no pass (no verdict yet; after the bake `no_data` decides).
    let (n, m) = (canary_p99.len(), stable_p99.len());
    let underpowered = n > 0 && m > 0 && smallest_p(n, m) >= alpha;
    let latency_suspect = !latency_worse
        && underpowered
        && matches!((cf.p99, sf.p99), (Some(c), Some(s)) if c > s * scale);
    let level = percent_level(analysis.confidence);
    let errors = format!(
        "errors worse by > {}",
        percent(analysis.max_error_rate_increase)
    );
    let latency = format!(
        "p99 slower by > {:.0}%",
        analysis.max_latency_increase * 100.0
    );
    let why = match (errors_worse, latency_worse) {
        (true, true) => format!("{errors} and {latency} at {level}"),
        (true, false) => format!("{errors} at {level}"),
        (false, true) => format!("{latency} at {level}"),
        (false, false) if latency_suspect => format!(
            "p99 looks slower by > {:.0}% but {n} minutes cannot show it at {level}",
            analysis.max_latency_increase * 100.0
        ),
        (false, false) if latency_p.is_none() => {
            format!("not worse beyond the margins at {level} (no p99 samples)")
        }
        (false, false) if underpowered => {
            format!("not worse beyond the margins at {level} (p99: {n} minutes)")
        }
        (false, false) => format!("not worse beyond the margins at {level}"),
    };
    let verdict = if errors_worse || latency_worse {
        Verdict::Fail
    } else if latency_suspect {
        Verdict::NoData
    } else {
        Verdict::Pass
    };
    done(verdict, error_p, latency_p, why)
}

/// `95%`, `99.9%`.
fn percent_level(confidence: f64) -> String {
    let p = confidence * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// One-sided p-value of "the new colour's error rate exceeds the stable one's by more than
/// `margin`", over all requests (a Wald test of the difference of two proportions); `None`
/// without requests on either side.
fn proportion_greater(canary: &Figures, stable: &Figures, margin: f64) -> Option<f64> {
    if canary.requests == 0 || stable.requests == 0 {
        return None;
    }
    let (n1, n2) = (canary.requests as f64, stable.requests as f64);
    let (p1, p2) = (canary.error_rate, stable.error_rate);
    let excess = p1 - p2 - margin;
    let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return Some(if excess > 0.0 { 0.0 } else { 1.0 });
    }
    let normal = Normal::standard();
    Some((1.0 - normal.cdf(excess / se)).clamp(0.0, 1.0))
}

/// The smallest one-sided p-value a rank test of `n` against `m` samples can give (every new
/// sample above every stable one): 1 / C(n+m, n).
fn smallest_p(n: usize, m: usize) -> f64 {
    let mut c = 1.0_f64;
    for i in 0..n.min(m) {
        c = c * (n + m - i) as f64 / (i + 1) as f64;
    }
    1.0 / c
}

/// Minutes that say something: requests a finite, positive count; errors and p99 finite (a
/// NaN or negative value is dropped, never read as zero).
fn clean(minutes: &[Minute]) -> Vec<Minute> {
    minutes
        .iter()
        .filter(|m| m.requests.is_finite() && m.requests > 0.0)
        .map(|m| Minute {
            requests: m.requests,
            errors: m
                .errors
                .filter(|e| e.is_finite() && *e >= 0.0)
                .map(|e| e.min(m.requests)),
            p99: m.p99.filter(|p| p.is_finite() && *p >= 0.0),
        })
        .collect()
}

fn figures(minutes: &[Minute]) -> Figures {
    let requests: f64 = minutes.iter().map(|m| m.requests).sum();
    let errors: f64 = minutes.iter().map(|m| m.errors.unwrap_or(0.0)).sum();
    let mut p99: Vec<f64> = minutes.iter().filter_map(|m| m.p99).collect();
    p99.sort_by(f64::total_cmp);
    let median = match p99.len() {
        0 => None,
        n if n % 2 == 1 => Some(p99[n / 2]),
        n => Some((p99[n / 2 - 1] + p99[n / 2]) / 2.0),
    };
    Figures {
        requests: requests.round() as u64,
        errors: errors.round() as u64,
        minutes: minutes.len(),
        error_rate: if requests > 0.0 {
            errors / requests
        } else {
            0.0
        },
        p99: median,
    }
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn ms(p99: Option<f64>) -> String {
    p99.map(|s| format!("{:.0} ms", s * 1000.0))
        .unwrap_or_else(|| "n/a".to_string())
}

fn p_fmt(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.4}"))
        .unwrap_or_else(|| "not tested".to_string())
}

/// The Mann-Whitney U statistic of `x` against `y`: pairs with x > y, ties counting half.
pub fn u_statistic(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .map(|a| {
            y.iter()
                .map(|b| match a.total_cmp(b) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                })
                .sum::<f64>()
        })
        .sum()
}

/// Largest `n·m` for which the exact distribution of U is used (without ties); above it, or
/// with ties, the normal approximation with tie and continuity corrections (as R's
/// `wilcox.test` and SciPy's `mannwhitneyu` do).
const EXACT_LIMIT: usize = 400;

/// One-sided p-value of "`x` is stochastically greater than `y`"; `None` when either is empty.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<f64> {
    let (n, m) = (x.len(), y.len());
    if n == 0 || m == 0 {
        return None;
    }
    let u = u_statistic(x, y);
    let mut all: Vec<f64> = x.iter().chain(y).copied().collect();
    all.sort_by(f64::total_cmp);
    let ties: Vec<usize> = all
        .chunk_by(|a, b| a.total_cmp(b).is_eq())
        .map(<[f64]>::len)
        .filter(|&t| t > 1)
        .collect();
    if ties.is_empty() && n * m <= EXACT_LIMIT {
        return Some(exact_upper_tail(n, m, u.round() as usize));
    }
    let (nf, mf) = (n as f64, m as f64);
    let total = nf + mf;
    let mean = nf * mf / 2.0;
    let tie_term: f64 = ties
        .iter()
        .map(|&t| {
            let t = t as f64;
            t * t * t - t
        })
        .sum();
    let variance = nf * mf / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 {
        // Every value the same: no evidence either way.
        return Some(1.0);
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    let normal = Normal::standard();
    Some((1.0 - normal.cdf(z)).clamp(0.0, 1.0))
}

/// P(U ≥ u) under the null hypothesis, from the exact distribution of U for samples of `n`
/// and `m` without ties: the count of arrangements with each U, built up one observation at a
/// time (f(i, j, u) = f(i-1, j, u-j) + f(i, j-1, u)).
fn exact_upper_tail(n: usize, m: usize, u: usize) -> f64 {
    let max = n * m;
    // counts[j][u] for the current i.
    let mut prev: Vec<Vec<f64>> = (0..=m)
        .map(|_| {
            let mut c = vec![0.0; max + 1];
            c[0] = 1.0;
            c
        })
        .collect();
    for _ in 1..=n {
        let mut next: Vec<Vec<f64>> = vec![vec![0.0; max + 1]; m + 1];
        next[0][0] = 1.0;
        for j in 1..=m {
            for v in 0..=max {
                let from_x = if v >= j { prev[j][v - j] } else { 0.0 };
                next[j][v] = from_x + next[j - 1][v];
            }
        }
        prev = next;
    }
    let counts = &prev[m];
    let total: f64 = counts.iter().sum();
    let tail: f64 = counts.iter().skip(u.min(max + 1)).sum();
    tail / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    /// R's `wilcox.test` documentation example (Hollander & Wolfe, depression scale):
    /// `wilcox.test(x, y, alternative = "g")` gives W = 35, p-value = 0.1272 (exact).
    #[test]
    fn the_rank_test_matches_r_wilcox_test_reference_values() {
        let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
        let y = [1.15, 0.88, 0.90, 0.74, 1.21];
        assert_eq!(u_statistic(&x, &y), 35.0);
        let p = mann_whitney_greater(&x, &y).unwrap();
        assert!(close(p, 0.1272, 0.00005), "p = {p}");
    }

    /// SciPy's `mannwhitneyu` documentation example (ages of males and females): U = 17 and an
    /// exact two-sided p-value of 0.1111, i.e. 7/126 one-sided.
    #[test]
    fn the_rank_test_matches_scipy_mannwhitneyu_reference_values() {
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        assert_eq!(u_statistic(&males, &females), 17.0);
        let p = mann_whitney_greater(&males, &females).unwrap();
        assert!(close(p * 2.0, 0.1111, 0.00005), "p = {p}");
        assert!(close(p, 7.0 / 126.0, 1e-12));
    }

    /// Large samples with ties take the normal approximation with tie and continuity
    /// corrections; the reference p-value is SciPy's `mannwhitneyu` with
    /// `alternative="greater", method="asymptotic"`.
    #[test]
    fn the_normal_approximation_with_ties_matches_scipy() {
        // scipy: mannwhitneyu([1,2,2,3,3,3,4,4,5,6], [1,1,2,2,2,3,3,4], alternative="greater",
        //        method="asymptotic") -> statistic 57.0, pvalue 0.066318769 (SciPy 1.17.1)
        let x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0];
        let y = [1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0];
        assert_eq!(u_statistic(&x, &y), 57.0);
        let p = mann_whitney_greater(&x, &y).unwrap();
        assert!(close(p, 0.066_318_769, 1e-8), "p = {p}");
    }

    #[test]
    fn exact_tails_are_probabilities_that_sum_to_one_over_the_support() {
        assert!(close(exact_upper_tail(3, 4, 0), 1.0, 1e-12));
        assert!(close(exact_upper_tail(3, 4, 12), 1.0 / 35.0, 1e-12));
        assert_eq!(exact_upper_tail(3, 4, 13), 0.0);
    }

    fn analysis() -> Analysis {
        serde_json::from_str("{}").unwrap()
    }

    /// Five minutes of `requests` a minute, `rates` of them failing, `p99` seconds.
    fn minutes(requests: f64, rates: [f64; 5], p99: [f64; 5]) -> Vec<Minute> {
        rates
            .iter()
            .zip(p99)
            .map(|(r, p)| Minute {
                requests,
                errors: Some((requests * r).round()),
                p99: Some(p),
            })
            .collect()
    }

    const BASE_RATES: [f64; 5] = [0.001, 0.002, 0.0, 0.003, 0.001];
    const BASE_P99: [f64; 5] = [0.201, 0.195, 0.210, 0.188, 0.205];

    /// A case of the table: its name, the new and the stable colour's minutes, the verdict, and
    /// words its summary must contain.
    type Case = (
        &'static str,
        Vec<Minute>,
        Vec<Minute>,
        Verdict,
        &'static str,
    );

    /// The acceptance table: each case and the verdict it gives.
    #[test]
    fn the_judge_gives_each_case_its_verdict() {
        let stable = minutes(1000.0, BASE_RATES, BASE_P99);
        let nan = Minute {
            requests: f64::NAN,
            errors: Some(f64::NAN),
            p99: Some(f64::NAN),
        };
        let cases: Vec<Case> = vec![
            (
                "clearly worse",
                minutes(
                    200.0,
                    [0.05, 0.06, 0.045, 0.07, 0.055],
                    [0.4, 0.45, 0.5, 0.38, 0.42],
                ),
                stable.clone(),
                Verdict::Fail,
                "errors worse by > 1.00% and p99 slower by > 25% at 95%",
            ),
            (
                "clearly equal",
                minutes(
                    200.0,
                    [0.0, 0.005, 0.0, 0.0, 0.005],
                    [0.199, 0.204, 0.192, 0.208, 0.197],
                ),
                stable.clone(),
                Verdict::Pass,
                "not worse beyond the margins at 95%",
            ),
            (
                "marginal: worse, but within both margins",
                minutes(
                    200.0,
                    [0.005, 0.01, 0.005, 0.01, 0.005],
                    [0.23, 0.24, 0.235, 0.228, 0.242],
                ),
                stable.clone(),
                Verdict::Pass,
                "not worse beyond the margins",
            ),
            (
                "too few requests",
                minutes(15.0, [0.0; 5], BASE_P99),
                stable.clone(),
                Verdict::NoData,
                "75 of 100 requests needed",
            ),
            (
                "zero-traffic baseline, new colour within the margin",
                minutes(200.0, [0.0, 0.005, 0.0, 0.005, 0.0], BASE_P99),
                Vec::new(),
                Verdict::Pass,
                "no stable traffic to compare with",
            ),
            (
                "zero-traffic baseline, new colour over the margin",
                minutes(200.0, [0.03; 5], BASE_P99),
                vec![Minute {
                    requests: 0.0,
                    errors: None,
                    p99: None,
                }],
                Verdict::Fail,
                "no stable traffic to compare with",
            ),
            (
                "NaN and empty samples are dropped, never read as zero",
                vec![nan; 5],
                stable.clone(),
                Verdict::NoData,
                "0 of 100 requests needed",
            ),
            (
                "no samples at all",
                Vec::new(),
                Vec::new(),
                Verdict::NoData,
                "0 of 100 requests needed",
            ),
            (
                "latency-only regression",
                minutes(
                    200.0,
                    [0.0, 0.005, 0.0, 0.0, 0.005],
                    [0.41, 0.39, 0.44, 0.38, 0.40],
                ),
                stable.clone(),
                Verdict::Fail,
                "canary judge fail: p99 slower by > 25% at 95%.",
            ),
            (
                "error-only regression",
                minutes(
                    200.0,
                    [0.04, 0.035, 0.05, 0.045, 0.03],
                    [0.199, 0.204, 0.192, 0.208, 0.197],
                ),
                stable.clone(),
                Verdict::Fail,
                "canary judge fail: errors worse by > 1.00% at 95%.",
            ),
        ];
        for (name, canary, stable, verdict, text) in cases {
            let j = judge(&analysis(), &Samples { canary, stable });
            assert_eq!(j.verdict, verdict, "{name}: {}", j.summary);
            assert!(j.summary.contains(text), "{name}: {}", j.summary);
        }
    }

    #[test]
    fn a_missing_5xx_datapoint_in_a_minute_with_requests_counts_as_no_errors() {
        let canary: Vec<Minute> = minutes(200.0, [0.0; 5], BASE_P99)
            .into_iter()
            .map(|m| Minute { errors: None, ..m })
            .collect();
        let stable = minutes(1000.0, BASE_RATES, BASE_P99);
        let j = judge(&analysis(), &Samples { canary, stable });
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.summary);
        assert_eq!((j.canary.requests, j.canary.errors), (1000, 0));
    }

    #[test]
    fn a_higher_confidence_needs_more_evidence_to_fail() {
        // Worse in every one of 5 minutes, on little traffic (2.5% of 40 requests a minute):
        // the rank test is significant at 95%, not at 99.9%, and the 200 requests in all are
        // too few for the test of the proportions to be.
        let canary = minutes(40.0, [0.025; 5], BASE_P99);
        let stable = minutes(1000.0, BASE_RATES, BASE_P99);
        let samples = Samples { canary, stable };
        let at_95 = judge(&analysis(), &samples);
        let strict = Analysis {
            confidence: 0.999,
            ..analysis()
        };
        let at_999 = judge(&strict, &samples);
        assert_eq!(at_95.verdict, Verdict::Fail, "{}", at_95.summary);
        assert_eq!(at_999.verdict, Verdict::Pass, "{}", at_999.summary);
        assert!(at_999.summary.contains("at 99.9%"), "{}", at_999.summary);
    }

    /// A few minutes cannot make a rank test significant, however bad the new colour is: the
    /// errors over all requests decide then, and a p99 that looks worse but cannot be shown is
    /// no pass.
    #[test]
    fn few_minutes_never_pass_a_clearly_worse_colour() {
        let stable = minutes(1000.0, BASE_RATES, BASE_P99);
        let two = |m: Vec<Minute>| m.into_iter().take(2).collect::<Vec<_>>();
        let failing_all = minutes(200.0, [1.0; 5], BASE_P99);
        let j = judge(
            &analysis(),
            &Samples {
                canary: two(failing_all),
                stable: two(stable.clone()),
            },
        );
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.summary);
        let slow = minutes(200.0, [0.0; 5], [0.9; 5]);
        let j = judge(
            &analysis(),
            &Samples {
                canary: two(slow),
                stable: two(stable),
            },
        );
        assert_eq!(j.verdict, Verdict::NoData, "{}", j.summary);
        assert!(j.summary.contains("cannot show it"), "{}", j.summary);
    }
}

#[cfg(test)]
mod few_minutes_tests {
    use super::*;

    fn minute(requests: f64, rate: f64, p99: f64) -> Minute {
        Minute {
            requests,
            errors: Some((requests * rate).round()),
            p99: Some(p99),
        }
    }

    /// "No data is never a pass by itself", and a step passes only when the new revision is not
    /// worse beyond the margin *with statistical confidence*. With the few per-minute samples a
    /// step's bake gives (the registration allows a 3-minute bake; CloudWatch has the last
    /// minute or two of ALB metrics only after a delay), the rank test cannot reach the
    /// configured confidence however bad the new colour is: a canary answering every request
    /// with a 5XX is passed. (With no stable traffic at all the same canary fails on the margin
    /// alone.)
    #[test]
    fn a_canary_failing_every_request_is_never_passed_for_want_of_minutes() {
        let stable = |n: usize| -> Vec<Minute> {
            (0..n)
                .map(|i| minute(1000.0, 0.001 * (i + 1) as f64, 0.20 + 0.001 * i as f64))
                .collect()
        };
        let broken =
            |n: usize| -> Vec<Minute> { (0..n).map(|_| minute(200.0, 1.0, 0.2)).collect() };
        let cases: [(&str, f64, usize); 3] = [
            ("3-minute bake, confidence 0.99", 0.99, 3),
            ("6-minute bake, confidence 0.999", 0.999, 6),
            (
                "5-minute bake read with two minutes in CloudWatch, confidence 0.95",
                0.95,
                2,
            ),
        ];
        let mut passed = Vec::new();
        for (name, confidence, n) in cases {
            let analysis = Analysis {
                confidence,
                ..serde_json::from_str("{}").unwrap()
            };
            assert!(analysis.check().is_ok(), "harness: valid settings");
            let j = judge(
                &analysis,
                &Samples {
                    canary: broken(n),
                    stable: stable(n),
                },
            );
            if j.verdict != Verdict::Fail {
                passed.push(format!("{name}: {:?} — {}", j.verdict, j.summary));
            }
        }
        assert!(
            passed.is_empty(),
            "a canary with a 100% error rate against a 0.1-0.3% stable colour was not failed:\n{}",
            passed.join("\n")
        );
    }
}
