//! MovieLens ratings, binarised as the CCE authors do: rating >= 4 -> 1, rating <= 2 -> 0, ratings
//! strictly between (3, and 2.5/3.5 in the half-star sets) are dropped. User and item ids are
//! compacted (ascending raw id), and each user's last 2 interactions by timestamp form the
//! held-out set.
//!
//! The held-out set is both the validation and the test split (the CCE code evaluates on one
//! held-out set); reports therefore select the epoch on the same rows they report, which the
//! README states.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::skip::{BadRowPolicy, SkipReport};

/// The three MovieLens file layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovieLensLayout {
    /// ml-100k `u.data`: `user \t item \t rating \t timestamp`.
    Tab,
    /// ml-1m / ml-10m `ratings.dat`: `user::item::rating::timestamp`.
    DoubleColon,
    /// ml-20m / ml-25m `ratings.csv` with header `userId,movieId,rating,timestamp`.
    Csv,
}

impl MovieLensLayout {
    /// Picks the layout from the file name (`*.dat`, `*.csv`, otherwise tab).
    pub fn detect(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("dat") => MovieLensLayout::DoubleColon,
            Some("csv") => MovieLensLayout::Csv,
            _ => MovieLensLayout::Tab,
        }
    }
}

/// Number of most recent interactions per user held out.
pub const HOLDOUT_PER_USER: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Rating {
    user: u64,
    item: u64,
    label: f32,
    ts: i64,
}

/// Parses ratings (unbinarised rows counted in `dropped_neutral`).
fn read_ratings(path: &Path, layout: MovieLensLayout, policy: BadRowPolicy) -> Result<(Vec<Rating>, SkipReport, u64)> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut skips = SkipReport::default();
    let mut neutral = 0u64;
    let names = ["user", "item", "rating", "timestamp"];
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let bytes = line.map_err(|e| DataError::io(path, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches('\r');
        if layout == MovieLensLayout::Csv && line_no == 1 && text.starts_with("userId") {
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = match layout {
            MovieLensLayout::Tab => text.split('\t').collect(),
            MovieLensLayout::DoubleColon => text.split("::").collect(),
            MovieLensLayout::Csv => text.split(',').collect(),
        };
        let parsed: std::result::Result<Rating, (usize, String)> = (|| {
            if fields.len() != 4 {
                return Err((usize::MAX, format!("expected 4 fields, found {}", fields.len())));
            }
            let int = |k: usize| {
                fields[k].trim().parse::<u64>().map_err(|_| (k, format!("not a non-negative integer: {:?}", fields[k])))
            };
            let user = int(0)?;
            let item = int(1)?;
            let rating: f32 = fields[2].trim().parse().map_err(|_| (2, format!("not a number: {:?}", fields[2])))?;
            if !(0.0..=5.0).contains(&rating) {
                return Err((2, format!("rating {rating} outside 0..=5")));
            }
            let ts: i64 = fields[3].trim().parse().map_err(|_| (3, format!("not an integer: {:?}", fields[3])))?;
            Ok(Rating { user, item, label: rating, ts })
        })();
        match parsed {
            Ok(mut r) => {
                if r.label >= 4.0 {
                    r.label = 1.0;
                } else if r.label <= 2.0 {
                    r.label = 0.0;
                } else {
                    neutral += 1;
                    continue;
                }
                out.push(r);
            }
            Err((f, reason)) => {
                let field = names.get(f).copied().unwrap_or("(row)").to_string();
                let err = DataError::BadRow { path: path.to_path_buf(), line: line_no, field, reason };
                match policy {
                    BadRowPolicy::Fail => return Err(err),
                    BadRowPolicy::Skip => skips.record(line_no, &err.to_string()),
                }
            }
        }
    }
    Ok((out, skips, neutral))
}

/// Loads a MovieLens ratings file into a two-column (user, item) dataset.
pub fn load_movielens(path: &Path, layout: Option<MovieLensLayout>, policy: BadRowPolicy) -> Result<(Dataset, u64)> {
    let layout = layout.unwrap_or_else(|| MovieLensLayout::detect(path));
    let (ratings, skipped, neutral) = read_ratings(path, layout, policy)?;
    if ratings.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf(), reason: "no binarisable ratings".into() });
    }
    let compact = |key: fn(&Rating) -> u64| -> BTreeMap<u64, u32> {
        let mut m: BTreeMap<u64, u32> = ratings.iter().map(|r| (key(r), 0)).collect();
        for (i, v) in m.values_mut().enumerate() {
            *v = i as u32;
        }
        m
    };
    let users = compact(|r| r.user);
    let items = compact(|r| r.item);
    // Per user, rows ordered by (timestamp, file order); the last HOLDOUT_PER_USER are held out.
    let mut by_user: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, r) in ratings.iter().enumerate() {
        by_user.entry(r.user).or_default().push(i);
    }
    let mut held = vec![false; ratings.len()];
    for rows in by_user.values_mut() {
        rows.sort_by_key(|&i| (ratings[i].ts, i));
        for &i in rows.iter().rev().take(HOLDOUT_PER_USER) {
            held[i] = true;
        }
    }
    let order: Vec<usize> =
        (0..ratings.len()).filter(|&i| !held[i]).chain((0..ratings.len()).filter(|&i| held[i])).collect();
    let n_train = ratings.len() - held.iter().filter(|&&h| h).count();
    let mut cats = Vec::with_capacity(order.len() * 2);
    let mut labels = Vec::with_capacity(order.len());
    for &i in &order {
        let r = &ratings[i];
        cats.push(users[&r.user]);
        cats.push(items[&r.item]);
        labels.push(r.label as u8);
    }
    let ds = Dataset {
        name: path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        dense_names: vec![],
        cat_names: vec!["user".into(), "item".into()],
        dense: Default::default(),
        cats: cats.into(),
        labels: labels.into(),
        cardinalities: vec![users.len(), items.len()],
        splits: Splits { train: 0..n_train, val: n_train..ratings.len(), test: n_train..ratings.len() },
        skipped,
        teacher: None,
    };
    Ok((ds, neutral))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn binarises_compacts_and_holds_out_last_two() {
        let mut f = tempfile::Builder::new().suffix(".data").tempfile().unwrap();
        // user item rating ts
        let rows = [
            (10, 100, 5, 1),
            (10, 200, 3, 2),
            (10, 300, 1, 3),
            (10, 400, 4, 4),
            (10, 100, 2, 5),
            (20, 300, 4, 9),
            (20, 200, 5, 1),
            (20, 400, 2, 3),
        ];
        for (u, i, r, t) in rows {
            writeln!(f, "{u}\t{i}\t{r}\t{t}").unwrap();
        }
        let (ds, neutral) = load_movielens(f.path(), None, BadRowPolicy::Fail).unwrap();
        assert_eq!(neutral, 1);
        assert_eq!(ds.n_rows(), 7);
        assert_eq!(ds.cardinalities, vec![2, 4]);
        assert_eq!(ds.splits.train.len(), 3);
        assert_eq!(ds.splits.val.len(), 4);
        // User 10's last two by time: (400, ts 4, label 1) and (100, ts 5, label 0).
        let held: Vec<(u32, u32, f32)> =
            ds.splits.val.clone().map(|r| (ds.cat_row(r)[0], ds.cat_row(r)[1], ds.label(r))).collect();
        assert!(held.contains(&(0, 3, 1.0)) && held.contains(&(0, 0, 0.0)));
        // User 20's last two: (400, ts 3, 0) and (300, ts 9, 1).
        assert!(held.contains(&(1, 3, 0.0)) && held.contains(&(1, 2, 1.0)));
        ds.validate().unwrap();
    }

    #[test]
    fn parses_dat_and_csv_and_reports_bad_rows() {
        let mut f = tempfile::Builder::new().suffix(".dat").tempfile().unwrap();
        writeln!(f, "1::1193::5::978300760\n1::661::3::978302109").unwrap();
        let (ds, _) = load_movielens(f.path(), None, BadRowPolicy::Fail).unwrap();
        assert_eq!(ds.n_rows(), 1);
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        writeln!(f, "userId,movieId,rating,timestamp\n1,2,4.5,100\n1,3,x,101").unwrap();
        let err = load_movielens(f.path(), None, BadRowPolicy::Fail).unwrap_err().to_string();
        assert!(err.contains(":3:") && err.contains("`rating`"), "{err}");
        let (ds, _) = load_movielens(f.path(), None, BadRowPolicy::Skip).unwrap();
        assert_eq!(ds.skipped.skipped, 1);
        assert_eq!(ds.n_rows(), 1);
    }
}
