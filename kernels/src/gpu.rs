//! One [`Gpu`] per device ordinal: its context, the stream every op runs on, device memory from
//! CUDA's stream-ordered pool, and the kernel modules compiled for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUdeviceptr, CUmemPool_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};
use cudarc::nvrtc::Ptx;

use crate::nvrtc::{compile_cubin, nvrtc_available};
use crate::source::Source;
use crate::{Error, Result};

/// A CUDA device ready for work. Every op is queued on one stream, so ops run in the order they
/// are issued and nothing waits on the host until a value is copied back.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Kernels already looked up, by name: a launch costs no driver lookup once warm.
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu(cuda:{}, {})", self.ordinal(), self.arch)
    }
}

/// CUBINs compiled in this process, by (source hash, arch): a second device of the same
/// architecture loads them without compiling again.
type CubinCache = Mutex<HashMap<(u64, String), Arc<Vec<u8>>>>;

fn cubin_cache() -> &'static CubinCache {
    static CACHE: OnceLock<CubinCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl Gpu {
    /// The device `ordinal`, created on first use and shared after. Errors (never panics) when
    /// the driver, NVRTC or the device is missing.
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
        let mut gpus = GPUS
            .get_or_init(Default::default)
            .lock()
            .expect("gpu table");
        if let Some(gpu) = gpus.get(&ordinal) {
            return Ok(gpu.clone());
        }
        let gpu = Arc::new(Gpu::open(ordinal)?);
        gpus.insert(ordinal, gpu.clone());
        Ok(gpu)
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        if !driver_available() {
            return Err(Error::msg(
                "no CUDA driver on this machine (libcuda.so not found); use --device cpu",
            ));
        }
        if !nvrtc_available() {
            return Err(Error::msg(
                "libnvrtc not found on the loader path: install the nvidia-cuda-nvrtc wheel \
                 (scripts/setup.sh) or the CUDA toolkit, and add its lib folder to LD_LIBRARY_PATH",
            ));
        }
        let count = CudaContext::device_count()?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::msg(format!(
                "cuda:{ordinal} does not exist: this machine has {count} CUDA device(s)"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // One stream orders all work, so cudarc's per-buffer event tracking is not needed.
        // SAFETY: called before any buffer or stream of this context exists.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let (major, minor) = ctx.compute_capability()?;
        // sm_90a unlocks Hopper's wgmma/TMA instructions; other GPUs get their plain arch.
        let arch = if (major, minor) == (9, 0) {
            "sm_90a".to_string()
        } else {
            format!("sm_{major}{minor}")
        };
        keep_pool_memory(&ctx)?;
        Ok(Gpu {
            ctx,
            stream,
            arch,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The architecture kernels are compiled for, e.g. `sm_90a`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// The stream every op of this device runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every queued op has finished (and reports an error any of them raised).
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// The kernel `name` of the family `family`, compiling the family on first use.
    pub fn function(&self, family: &'static str, name: &str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().expect("function table").get(name) {
            return Ok(f.clone());
        }
        let module = self.module(family)?;
        let f = module
            .load_function(name)
            .map_err(|e| Error::msg(format!("kernel `{name}` not found in {family}.cu: {e}")))?;
        self.functions
            .lock()
            .expect("function table")
            .insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn module(&self, family: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().expect("module table");
        if let Some(m) = modules.get(family) {
            return Ok(m.clone());
        }
        let source = Source::named(family)
            .ok_or_else(|| Error::msg(format!("no kernel family `{family}`")))?;
        let key = (source.hash(), self.arch.clone());
        let cached = cubin_cache()
            .lock()
            .expect("cubin cache")
            .get(&key)
            .cloned();
        let cubin = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(compile_cubin(&source, &self.arch)?);
                cubin_cache()
                    .lock()
                    .expect("cubin cache")
                    .insert(key, c.clone());
                c
            }
        };
        let module = self.ctx.load_module(Ptx::from_binary(cubin.to_vec()))?;
        modules.insert(family, module.clone());
        Ok(module)
    }

    /// `bytes` of uninitialised device memory from the stream-ordered pool.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        // SAFETY: the memory is uninitialised; every kernel writes its output before it is read.
        let slice = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }?;
        let ptr = {
            let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&slice, &self.stream);
            ptr
        };
        Ok(DeviceBuffer {
            ptr,
            bytes,
            slice,
            gpu: self.clone(),
        })
    }

    /// A device copy of `data`.
    pub fn upload(self: &Arc<Self>, data: &[u8]) -> Result<DeviceBuffer> {
        let mut buf = self.alloc(data.len())?;
        if !data.is_empty() {
            self.stream.memcpy_htod(data, &mut buf.slice)?;
        }
        Ok(buf)
    }

    /// Launch configuration for `n` independent elements (grid-stride kernels).
    pub fn grid_for(&self, n: usize) -> LaunchConfig {
        let threads = 256u32;
        let blocks = n.div_ceil(threads as usize).clamp(1, 65_535 * 8) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Sets the default pool's release threshold to "never", so memory freed by one training step is
/// reused by the next instead of going back to the driver.
fn keep_pool_memory(ctx: &CudaContext) -> Result<()> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    // SAFETY: plain driver calls on this context's device with a valid out-pointer and value.
    unsafe {
        let pool = cudarc::driver::result::device::get_default_mem_pool(ctx.cu_device())?;
        let mut threshold: u64 = u64::MAX;
        cudarc::driver::result::mem_pool::set_attribute(
            pool,
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        )?;
    }
    Ok(())
}

/// Device memory owned by one tensor storage. Freed in stream order when dropped, so a kernel
/// still queued on the stream finishes reading it first.
pub struct DeviceBuffer {
    ptr: CUdeviceptr,
    bytes: usize,
    slice: CudaSlice<u8>,
    gpu: Arc<Gpu>,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer({} bytes on cuda:{})",
            self.bytes,
            self.gpu.ordinal()
        )
    }
}

impl DeviceBuffer {
    /// The device address of the first byte.
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Whether the buffer holds no byte.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The device it lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Copies the first `host.len()` bytes of the buffer to `host`, waiting for the stream.
    pub fn download_into(&self, host: &mut [u8]) -> Result<()> {
        if host.len() > self.bytes {
            return Err(Error::msg(format!(
                "download of {} bytes from a buffer of {}",
                host.len(),
                self.bytes
            )));
        }
        if !host.is_empty() {
            let view = self.slice.slice(0..host.len());
            self.gpu.stream.memcpy_dtoh(&view, host)?;
            self.gpu.stream.synchronize()?;
        }
        Ok(())
    }
}
