//! The latent cache: a data set encoded once (by the AutoencoderKL, or any encoder the caller
//! gives) and stored as safetensors, so latent-diffusion training never runs the encoder again.
//!
//! The file holds `latents` (`f32 [N, ...]`) and `labels` (`i64 [N]`), with the class names
//! (a JSON array) and the padding used in its metadata.

use std::collections::HashMap;
use std::path::Path;

use tensor::safetensors::{save, SafeTensorsFile};
use tensor::{DType, Device, Error, Result, Tensor};

use super::loader::{LoaderState, Sampler};
use super::transform::prepare_into;
use super::Dataset;

/// Encoded images with their labels and class names.
#[derive(Clone, Debug)]
pub struct Latents {
    /// `f32 [N, ...]` on the CPU.
    pub latents: Tensor,
    /// `i64 [N]`.
    pub labels: Tensor,
    /// The class names, by label.
    pub classes: Vec<String>,
}

impl Latents {
    /// Encodes every image of `data` in order, `batch_size` at a time: `encoder` receives
    /// `f32 [B, C, H + 2 pad, W + 2 pad]` in `[-1, 1]` (no flips) and returns `[B, ...]` (any float
    /// dtype, any device), the same trailing shape for every batch.
    pub fn encode(
        data: &Dataset,
        batch_size: usize,
        pad: usize,
        mut encoder: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Latents> {
        let mut sampler = Sampler::new(
            data.len(),
            batch_size,
            0,
            false,
            false,
            LoaderState::default(),
        )?;
        let [c, h, w] = data.image_shape();
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut values: Vec<f32> = Vec::new();
        let mut item_shape: Option<Vec<usize>> = None;
        for _ in 0..sampler.batches_per_epoch() {
            let (_, indices) = sampler.next_indices();
            let size = c * ph * pw;
            let mut x = vec![0f32; indices.len() * size];
            for (out, &i) in x.chunks_exact_mut(size).zip(&indices) {
                prepare_into(data.image(i), (h, w), pad, false, out);
            }
            let x = Tensor::from_vec(x, &[indices.len(), c, ph, pw])?;
            let z = encoder(&x)?;
            let shape = z.shape().to_vec();
            if shape.first() != Some(&indices.len())
                || item_shape.as_ref().is_some_and(|s| s[..] != shape[1..])
            {
                return Err(Error::shape(
                    "Latents::encode",
                    format!(
                        "the encoder returned {shape:?} for a batch of {}; expected [{}, {}]",
                        indices.len(),
                        indices.len(),
                        item_shape
                            .as_ref()
                            .map_or("...".to_string(), |s| format!("{s:?}"))
                    ),
                ));
            }
            item_shape.get_or_insert_with(|| shape[1..].to_vec());
            values.extend(
                z.to_device(Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .to_vec::<f32>()?,
            );
        }
        let mut shape = vec![data.len()];
        shape.extend(item_shape.unwrap_or_default());
        Ok(Latents {
            latents: Tensor::from_vec(values, &shape)?,
            labels: data.labels_tensor()?,
            classes: data.classes().to_vec(),
        })
    }

    /// The number of latents.
    pub fn len(&self) -> usize {
        self.labels.shape()[0]
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache to `path` atomically (creating its folder).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let classes = serde_json::to_string(&self.classes)
            .map_err(|e| Error::msg(format!("latent cache: class names to JSON: {e}")))?;
        let meta = HashMap::from([
            ("format".to_string(), "difftune latent cache".to_string()),
            ("classes".to_string(), classes),
        ]);
        save(
            path,
            &[("latents", &self.latents), ("labels", &self.labels)],
            Some(&meta),
        )
    }

    /// Reads a cache written by [`Latents::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Latents> {
        let path = path.as_ref();
        let bad = |msg: String| Error::Format {
            path: path.to_path_buf(),
            msg: format!("latent cache: {msg}"),
        };
        let file = SafeTensorsFile::open(path)?;
        let latents = file.tensor("latents")?.to_dtype(DType::F32)?;
        let labels = file.tensor("labels")?;
        if labels.dtype() != DType::I64
            || labels.rank() != 1
            || latents.rank() == 0
            || latents.shape()[0] != labels.shape()[0]
        {
            return Err(bad(format!(
                "latents {:?} and labels {:?} ({}): expected [N, ...] and i64 [N]",
                latents.shape(),
                labels.shape(),
                labels.dtype()
            )));
        }
        let classes: Vec<String> = file
            .metadata()
            .get("classes")
            .ok_or_else(|| bad("no `classes` metadata".to_string()))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("`classes` metadata is not a JSON list: {e}")))
            })?;
        Ok(Latents {
            latents,
            labels,
            classes,
        })
    }

    /// Loads the cache at `path` when it exists and holds one latent per image of `data`;
    /// otherwise encodes `data` (see [`Latents::encode`]) and saves the cache there.
    pub fn load_or_encode(
        path: impl AsRef<Path>,
        data: &Dataset,
        batch_size: usize,
        pad: usize,
        encoder: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Latents> {
        let path = path.as_ref();
        if path.is_file() {
            let cached = Latents::load(path)?;
            if cached.len() == data.len() && cached.labels.to_vec::<i64>()? == data.labels() {
                return Ok(cached);
            }
        }
        let latents = Latents::encode(data, batch_size, pad, encoder)?;
        latents.save(path)?;
        Ok(latents)
    }

    /// The latents and labels at `indices` (e.g. from a [`Sampler`]): `[B, ...]` and `[B]`.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let index = Tensor::from_vec(
            indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            &[indices.len()],
        )?;
        Ok((
            self.latents.index_select(0, &index)?,
            self.labels.index_select(0, &index)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_save_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("difftune-latents-{}", std::process::id()));
        let path = dir.join("latents.safetensors");
        let pixels: Vec<u8> = (0..5).flat_map(|i| [i as u8 * 50; 4]).collect();
        let labels = vec![0, 1, 1, 0, 1];
        let data = Dataset::from_raw(
            pixels,
            [5, 1, 2, 2],
            labels.clone(),
            vec!["a".into(), "b".into()],
        )
        .unwrap();
        // A toy encoder: the mean of each padded image and its first pixel, as [B, 2].
        let calls = std::cell::Cell::new(0);
        let encoder = |x: &Tensor| {
            calls.set(calls.get() + 1);
            let [b, _, h, w] = <[usize; 4]>::try_from(x.shape()).unwrap();
            assert_eq!((h, w), (4, 4), "padded by 1");
            let v = x.to_vec::<f32>()?;
            let out: Vec<f32> = v
                .chunks(h * w)
                .flat_map(|c| [c.iter().sum::<f32>() / 16.0, c[5]])
                .collect();
            Tensor::from_vec(out, &[b, 2])
        };
        let z = Latents::load_or_encode(&path, &data, 2, 1, encoder).unwrap();
        assert_eq!(calls.get(), 3, "5 images in batches of 2");
        assert_eq!(z.latents.shape(), &[5, 2]);
        let v = z.latents.to_vec::<f32>().unwrap();
        assert!((v[2 * 2 + 1] - (100.0 / 127.5 - 1.0)).abs() < 1e-6);

        // A second call reads the cache instead of encoding.
        let again = Latents::load_or_encode(&path, &data, 2, 1, encoder).unwrap();
        assert_eq!(calls.get(), 3);
        assert_eq!(again.latents.to_vec::<f32>().unwrap(), v);
        assert_eq!(again.labels.to_vec::<i64>().unwrap(), labels);
        assert_eq!(again.classes, vec!["a", "b"]);
        let (zb, yb) = again.batch(&[4, 0]).unwrap();
        assert_eq!(zb.to_vec::<f32>().unwrap(), [&v[8..10], &v[0..2]].concat());
        assert_eq!(yb.to_vec::<i64>().unwrap(), vec![1, 0]);

        // An encoder whose output does not match the batch is refused.
        let e = Latents::encode(&data, 2, 0, |_| {
            Tensor::zeros(&[3, 1], DType::F32, Device::Cpu)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected [2"), "{e}");
        // A file that is not a latent cache names itself.
        tensor::safetensors::save(&path, &[("x", &again.labels)], None).unwrap();
        let e = Latents::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("latents.safetensors") && e.contains("latents"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
