//! The mock gRPC backend (tonic): all four services over the deterministic data, with the
//! behaviour knobs applied, plus the standard `grpc.health.v1` health service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::Instance;
use super::behavior::Service;
use super::data::{self, DataError};
use crate::proto::v1::{
    CreateUserRequest, GetOrderRequest, GetProductRequest, GetStockRequest, GetUserRequest,
    ListOrdersRequest, ListOrdersResponse, ListUsersRequest, ListUsersResponse, MovementSummary,
    Order, Product, SearchProductsRequest, SearchProductsResponse, Stock, StockMovement, User,
    WatchStockRequest,
    inventory_service_server::{InventoryService, InventoryServiceServer},
    order_service_server::{OrderService, OrderServiceServer},
    product_service_server::{ProductService, ProductServiceServer},
    user_service_server::{UserService, UserServiceServer},
};

/// Metadata key naming the instance that answered (`0`, `1`, …), for load-balancing tests.
pub const INSTANCE_METADATA: &str = "x-gwbench-instance";

/// One instance of the mock gRPC services.
#[derive(Debug, Clone)]
pub struct MockGrpc {
    instance: Arc<Instance>,
}

impl MockGrpc {
    /// A mock answering as `instance`.
    pub fn new(instance: Arc<Instance>) -> Self {
        MockGrpc { instance }
    }

    async fn answer<T>(
        &self,
        service: Service,
        lookup: impl FnOnce() -> Result<T, DataError>,
    ) -> Result<Response<T>, Status> {
        self.instance.requests.fetch_add(1, Ordering::Relaxed);
        if self.instance.behaviors.apply(service).await.is_err() {
            return Err(Status::unavailable(format!(
                "{} mock: injected failure (error_rate)",
                service.name()
            )));
        }
        let mut resp = Response::new(lookup().map_err(to_status)?);
        resp.metadata_mut()
            .insert(INSTANCE_METADATA, self.instance.index_metadata.clone());
        Ok(resp)
    }
}

fn to_status(err: DataError) -> Status {
    match err {
        DataError::NotFound(m) => Status::not_found(m),
        DataError::InvalidArgument(m) => Status::invalid_argument(m),
    }
}

// ===== impl services =====

#[tonic::async_trait]
impl UserService for MockGrpc {
    async fn get_user(&self, req: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = req.get_ref().id;
        self.answer(Service::Users, || data::user(id)).await
    }

    async fn list_users(
        &self,
        req: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.answer(Service::Users, || data::list_users(req.get_ref()))
            .await
    }

    async fn create_user(&self, req: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        self.answer(Service::Users, || data::create_user(req.into_inner()))
            .await
    }
}

#[tonic::async_trait]
impl OrderService for MockGrpc {
    async fn get_order(&self, req: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        self.answer(Service::Orders, || data::order(&req.get_ref().id))
            .await
    }

    async fn list_orders(
        &self,
        req: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        self.answer(Service::Orders, || data::list_orders(req.get_ref()))
            .await
    }
}

#[tonic::async_trait]
impl ProductService for MockGrpc {
    async fn get_product(
        &self,
        req: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let id = req.get_ref().id;
        self.answer(Service::Products, || data::product(id)).await
    }

    async fn search_products(
        &self,
        req: Request<SearchProductsRequest>,
    ) -> Result<Response<SearchProductsResponse>, Status> {
        self.answer(Service::Products, || data::search_products(req.get_ref()))
            .await
    }
}

/// A stream of answers, as tonic's generated traits want it.
type AnswerStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `WatchStock` sends at most this many updates per call.
pub const MAX_WATCH_UPDATES: u32 = 10_000;

#[tonic::async_trait]
impl InventoryService for MockGrpc {
    async fn get_stock(&self, req: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        let id = req.get_ref().product_id;
        self.answer(Service::Inventory, || data::stock(id)).await
    }

    type WatchStockStream = AnswerStream<Stock>;

    /// The behaviour (latency, errors) applies once, before the first update; the updates then
    /// follow `interval_ms` apart.
    async fn watch_stock(
        &self,
        req: Request<WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        let WatchStockRequest {
            product_id,
            updates,
            interval_ms,
        } = req.into_inner();
        let updates = match updates {
            0 => 10,
            n if n > MAX_WATCH_UPDATES => {
                return Err(Status::invalid_argument(format!(
                    "updates {n} is more than {MAX_WATCH_UPDATES}"
                )));
            }
            n => n,
        };
        let first = self
            .answer(Service::Inventory, || data::stock(product_id))
            .await?;
        let interval = std::time::Duration::from_millis(u64::from(interval_ms));
        let mut resp = Response::new(Box::pin(futures_util::stream::unfold(
            (first.into_inner(), 0u32),
            move |(stock, sent)| async move {
                if sent == updates {
                    return None;
                }
                if sent > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                let next = data::stock_after(&stock, sent);
                Some((Ok(next), (stock, sent + 1)))
            },
        )) as Self::WatchStockStream);
        resp.metadata_mut()
            .insert(INSTANCE_METADATA, self.instance.index_metadata.clone());
        Ok(resp)
    }

    async fn record_movements(
        &self,
        req: Request<tonic::Streaming<StockMovement>>,
    ) -> Result<Response<MovementSummary>, Status> {
        let mut movements = req.into_inner();
        let mut summary = MovementSummary::default();
        while let Some(m) = movements.next().await {
            let m = m?;
            data::stock(m.product_id).map_err(to_status)?;
            summary.movements = summary.movements.saturating_add(1);
            summary.net_delta = summary.net_delta.saturating_add(i64::from(m.delta));
        }
        self.answer(Service::Inventory, || Ok(summary)).await
    }

    type SyncStockStream = AnswerStream<Stock>;

    /// Each movement is answered as it arrives (an unknown product ends the call NOT_FOUND).
    async fn sync_stock(
        &self,
        req: Request<tonic::Streaming<StockMovement>>,
    ) -> Result<Response<Self::SyncStockStream>, Status> {
        let movements = req.into_inner();
        let answers = movements.map(|m| {
            let m = m?;
            let mut stock = data::stock(m.product_id).map_err(to_status)?;
            stock.total_available = stock.total_available.saturating_add(m.delta);
            Ok(stock)
        });
        let mut resp = self
            .answer(Service::Inventory, || {
                Ok(Box::pin(answers) as Self::SyncStockStream)
            })
            .await?;
        resp.metadata_mut()
            .insert(INSTANCE_METADATA, self.instance.index_metadata.clone());
        Ok(resp)
    }
}

// ===== serving =====

/// Serves every mock service (and `grpc.health.v1`, and server reflection) on `listener` until `shutdown` is
/// cancelled, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    instance: Arc<Instance>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let mock = MockGrpc::new(instance);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<UserServiceServer<MockGrpc>>().await;
    health.set_serving::<OrderServiceServer<MockGrpc>>().await;
    health.set_serving::<ProductServiceServer<MockGrpc>>().await;
    health
        .set_serving::<InventoryServiceServer<MockGrpc>>()
        .await;
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    // Server reflection (v1, and v1alpha for older clients), from the embedded descriptor set
    // with its google.api.http annotations kept: `gateway --reflect` and `load --grpc
    // --reflect` need no descriptor file in front of the mocks.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::DESCRIPTOR_SET)
    };
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_optional_service(reflection().build_v1().ok())
        .add_optional_service(reflection().build_v1alpha().ok())
        .add_service(UserServiceServer::new(mock.clone()))
        .add_service(OrderServiceServer::new(mock.clone()))
        .add_service(ProductServiceServer::new(mock.clone()))
        .add_service(InventoryServiceServer::new(mock));
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()))
}
