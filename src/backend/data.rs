//! Deterministic mock data, shared by the REST and gRPC mocks so that both return the same
//! resource for the same id. Every field is a pure function of the id (and of the request), so a
//! response can be checked by recomputing it.

use prost_types::Timestamp;
use thiserror::Error;

use crate::proto::v1::{
    Address, CreateUserRequest, Dimensions, LineItem, ListOrdersRequest, ListOrdersResponse,
    ListUsersRequest, ListUsersResponse, Money, Order, OrderStatus, Product, ProductCategory,
    SearchProductsRequest, SearchProductsResponse, Stock, StockStatus, User, UserTier,
    WarehouseStock,
};

/// Largest existing user and product id; ids from 1 to this exist, others are not found.
pub const MAX_ID: i64 = 1_000_000;
/// Orders each user has (`ord-<user>-1` … `ord-<user>-20`).
pub const ORDERS_PER_USER: i64 = 20;
const BASE_EPOCH_S: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z
const SEARCH_SCAN_LIMIT: i64 = 100_000;

/// Why a mock lookup failed; maps to gRPC `NOT_FOUND`/`INVALID_ARGUMENT` and HTTP 404/400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DataError {
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
}

// ===== hashing =====

/// SplitMix64: a cheap, well-mixed hash of `x`; `salt` picks an independent stream.
fn mix(x: i64, salt: u64) -> u64 {
    let mut z = (x as u64)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(list: &[T], x: i64, salt: u64) -> T {
    list[(mix(x, salt) % list.len() as u64) as usize]
}

fn timestamp(x: i64, salt: u64, after: Option<&Timestamp>) -> Timestamp {
    let base = after.map_or(BASE_EPOCH_S, |t| t.seconds);
    let span = if after.is_some() {
        30 * 86_400
    } else {
        365 * 86_400
    };
    Timestamp {
        seconds: base + (mix(x, salt) % span) as i64,
        nanos: 0,
    }
}

fn money_eur(cents: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    }
}

fn check_id(kind: &str, id: i64) -> Result<(), DataError> {
    if (1..=MAX_ID).contains(&id) {
        Ok(())
    } else {
        Err(DataError::NotFound(format!("{kind} {id} not found")))
    }
}

fn page_size(value: i32, default: i32, max: i32, field: &str) -> Result<i32, DataError> {
    match value {
        v if v < 0 => Err(DataError::InvalidArgument(format!(
            "{field} must not be negative, got {v}"
        ))),
        0 => Ok(default),
        v => Ok(v.min(max)),
    }
}

// ===== users =====

const FIRST: [&str; 16] = [
    "Ada", "Alan", "Barbara", "Dennis", "Edsger", "Frances", "Grace", "Ken", "Leslie", "Linus",
    "Margaret", "Niklaus", "Radia", "Sophie", "Tim", "Vint",
];
const LAST: [&str; 16] = [
    "Allen",
    "Cerf",
    "Dijkstra",
    "Hamilton",
    "Hopper",
    "Kernighan",
    "Lamport",
    "Liskov",
    "Lovelace",
    "Perlman",
    "Ritchie",
    "Stroustrup",
    "Thompson",
    "Torvalds",
    "Turing",
    "Wirth",
];
const CITIES: [(&str, &str); 8] = [
    ("Berlin", "DE"),
    ("Lyon", "FR"),
    ("Porto", "PT"),
    ("Utrecht", "NL"),
    ("Austin", "US"),
    ("Osaka", "JP"),
    ("Toronto", "CA"),
    ("Adelaide", "AU"),
];
const STREETS: [&str; 8] = [
    "Main", "Station", "Harbour", "Mill", "Garden", "Church", "Market", "Bridge",
];

fn address_for(id: i64) -> Address {
    let (city, country) = pick(&CITIES, id, 20);
    let mut lines = vec![format!(
        "{} {} Street",
        1 + mix(id, 21) % 200,
        pick(&STREETS, id, 22)
    )];
    if mix(id, 23).is_multiple_of(4) {
        lines.push(format!("Apartment {}", 1 + mix(id, 24) % 60));
    }
    Address {
        lines,
        city: city.into(),
        postal_code: format!("{:05}", mix(id, 25) % 100_000),
        country_code: country.into(),
    }
}

fn user_unchecked(id: i64) -> User {
    let first = pick(&FIRST, id, 1);
    let last = pick(&LAST, id, 2);
    let username = format!("{}.{}{}", first.to_lowercase(), last.to_lowercase(), id);
    let mut roles = vec!["customer".to_string()];
    if id % 100 == 0 {
        roles.push("admin".into());
    }
    if mix(id, 3).is_multiple_of(5) {
        roles.push("beta".into());
    }
    let created_at = timestamp(id, 4, None);
    let updated_at = timestamp(id, 5, Some(&created_at));
    User {
        id,
        email: format!("{username}@example.com"),
        username,
        display_name: format!("{first} {last}"),
        tier: [UserTier::Free, UserTier::Pro, UserTier::Enterprise][(mix(id, 6) % 3) as usize]
            as i32,
        address: Some(address_for(id)),
        roles,
        labels: [
            (
                "region".to_string(),
                pick(&["eu", "us", "apac"], id, 7).to_string(),
            ),
            (
                "signup_channel".to_string(),
                pick(&["web", "ios", "android", "partner"], id, 8).to_string(),
            ),
        ]
        .into_iter()
        .collect(),
        active: id % 17 != 0,
        created_at: Some(created_at),
        updated_at: Some(updated_at),
    }
}

/// `GetUser`: user `id`, or not found outside `1..=MAX_ID`.
pub fn user(id: i64) -> Result<User, DataError> {
    check_id("user", id)?;
    Ok(user_unchecked(id))
}

/// `ListUsers`: a page of users in id order; `page_token` is the decimal id to start from.
pub fn list_users(req: &ListUsersRequest) -> Result<ListUsersResponse, DataError> {
    let size = page_size(req.page_size, 10, 100, "page_size")? as i64;
    let start = if req.page_token.is_empty() {
        1
    } else {
        match req.page_token.parse::<i64>() {
            Ok(v) if (1..=MAX_ID).contains(&v) => v,
            _ => {
                return Err(DataError::InvalidArgument(format!(
                    "page_token {:?} is not a token from a previous response",
                    req.page_token
                )));
            }
        }
    };
    let end = (start + size - 1).min(MAX_ID);
    Ok(ListUsersResponse {
        users: (start..=end).map(user_unchecked).collect(),
        next_page_token: if end < MAX_ID {
            (end + 1).to_string()
        } else {
            String::new()
        },
        total_size: MAX_ID as i32,
    })
}

/// `CreateUser`: validates the request and echoes it back as a user with an id derived from the
/// username. The mock stores nothing: a created user is not visible to `GetUser`.
pub fn create_user(req: CreateUserRequest) -> Result<User, DataError> {
    let name = req.username.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(DataError::InvalidArgument(
            "username is required and at most 64 characters".into(),
        ));
    }
    if !req.email.contains('@') {
        return Err(DataError::InvalidArgument(format!(
            "email {:?} is not an email address",
            req.email
        )));
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    });
    let id = MAX_ID + 1 + (hash % MAX_ID as u64) as i64;
    let created_at = timestamp(id, 4, None);
    Ok(User {
        id,
        username: name.to_string(),
        display_name: req.display_name,
        email: req.email,
        tier: if req.tier == 0 {
            UserTier::Free as i32
        } else {
            req.tier
        },
        address: req.address,
        roles: if req.roles.is_empty() {
            vec!["customer".into()]
        } else {
            req.roles
        },
        labels: req.labels,
        active: true,
        created_at: Some(created_at),
        updated_at: Some(created_at),
    })
}

// ===== products =====

const ADJECTIVES: [&str; 16] = [
    "Amber", "Brisk", "Compact", "Durable", "Electric", "Foldable", "Golden", "Handmade", "Iron",
    "Jumbo", "Lunar", "Modular", "Nordic", "Organic", "Rustic", "Silent",
];
const NOUNS: [(&str, ProductCategory); 16] = [
    ("Atlas", ProductCategory::Books),
    ("Novel", ProductCategory::Books),
    ("Cookbook", ProductCategory::Books),
    ("Headphones", ProductCategory::Electronics),
    ("Lamp", ProductCategory::Electronics),
    ("Speaker", ProductCategory::Electronics),
    ("Charger", ProductCategory::Electronics),
    ("Shovel", ProductCategory::Garden),
    ("Planter", ProductCategory::Garden),
    ("Hose", ProductCategory::Garden),
    ("Kettle", ProductCategory::Kitchen),
    ("Skillet", ProductCategory::Kitchen),
    ("Teapot", ProductCategory::Kitchen),
    ("Robot", ProductCategory::Toys),
    ("Puzzle", ProductCategory::Toys),
    ("Kite", ProductCategory::Toys),
];
const TAGS: [&str; 8] = [
    "bestseller",
    "eco",
    "gift",
    "new",
    "refurbished",
    "sale",
    "limited",
    "imported",
];

fn name_parts(id: i64) -> (usize, usize) {
    ((mix(id, 30) % 16) as usize, (mix(id, 31) % 16) as usize)
}

fn price_cents(id: i64) -> i64 {
    199 + (mix(id, 32) % 50_000) as i64
}

fn product_name(id: i64) -> String {
    let (a, n) = name_parts(id);
    format!("{} {}", ADJECTIVES[a], NOUNS[n].0)
}

fn product_unchecked(id: i64) -> Product {
    let (a, n) = name_parts(id);
    let (noun, category) = NOUNS[n];
    let tag_count = 1 + mix(id, 33) % 3;
    Product {
        id,
        sku: format!("SKU-{id:07}"),
        name: format!("{} {noun}", ADJECTIVES[a]),
        description: format!(
            "A {} {} for everyday use, batch {}.",
            ADJECTIVES[a].to_lowercase(),
            noun.to_lowercase(),
            mix(id, 34) % 1000
        ),
        category: category as i32,
        price: Some(money_eur(price_cents(id))),
        tags: (0..tag_count)
            .map(|k| pick(&TAGS, id, 40 + k).to_string())
            .collect(),
        dimensions: Some(Dimensions {
            width_mm: 20 + (mix(id, 35) % 600) as i32,
            height_mm: 20 + (mix(id, 36) % 600) as i32,
            depth_mm: 5 + (mix(id, 37) % 300) as i32,
            weight_g: 50 + (mix(id, 38) % 20_000) as i32,
        }),
        rating: 1.0 + (mix(id, 39) % 401) as f64 / 100.0,
        created_at: Some(timestamp(id, 4, None)),
    }
}

/// `GetProduct`: product `id`, or not found outside `1..=MAX_ID`.
pub fn product(id: i64) -> Result<Product, DataError> {
    check_id("product", id)?;
    Ok(product_unchecked(id))
}

/// `SearchProducts`: products (in id order, scanning the first 100,000) whose name contains `q`,
/// case-insensitively.
pub fn search_products(req: &SearchProductsRequest) -> Result<SearchProductsResponse, DataError> {
    let q = req.q.trim().to_lowercase();
    if q.is_empty() {
        return Err(DataError::InvalidArgument("q is required".into()));
    }
    let limit = page_size(req.limit, 10, 100, "limit")? as usize;
    // Names are "<adjective> <noun>": decide once per combination, then scan ids arithmetically.
    let mut matches = [[false; 16]; 16];
    let mut any = false;
    for (a, adj) in ADJECTIVES.iter().enumerate() {
        for (n, (noun, _)) in NOUNS.iter().enumerate() {
            let hit = format!("{adj} {noun}").to_lowercase().contains(&q);
            matches[a][n] = hit;
            any |= hit;
        }
    }
    let mut products = Vec::new();
    if any {
        for id in 1..=SEARCH_SCAN_LIMIT {
            let (a, n) = name_parts(id);
            if matches[a][n] {
                products.push(product_unchecked(id));
                if products.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(SearchProductsResponse { products })
}

// ===== orders =====

/// Parses `ord-<user>-<seq>` into (user, seq).
fn parse_order_id(id: &str) -> Option<(i64, i64)> {
    let (user, seq) = id.strip_prefix("ord-")?.split_once('-')?;
    let user: i64 = user.parse().ok()?;
    let seq: i64 = seq.parse().ok()?;
    ((1..=MAX_ID).contains(&user) && (1..=ORDERS_PER_USER).contains(&seq)).then_some((user, seq))
}

fn order_unchecked(user_id: i64, seq: i64) -> Order {
    let key = user_id * ORDERS_PER_USER + seq;
    let item_count = 1 + mix(key, 50) % 5;
    let items: Vec<LineItem> = (0..item_count)
        .map(|k| {
            let product_id = 1 + (mix(key, 51 + k) % MAX_ID as u64) as i64;
            LineItem {
                product_id,
                sku: format!("SKU-{product_id:07}"),
                name: product_name(product_id),
                quantity: 1 + (mix(key, 60 + k) % 3) as i32,
                unit_price: Some(money_eur(price_cents(product_id))),
            }
        })
        .collect();
    let total: i64 = items
        .iter()
        .map(|i| price_cents(i.product_id) * i.quantity as i64)
        .sum();
    let status = match seq {
        20 => OrderStatus::Pending,
        19 => OrderStatus::Paid,
        18 => OrderStatus::Shipped,
        s if s % 9 == 0 => OrderStatus::Cancelled,
        _ => OrderStatus::Delivered,
    };
    let created_at = timestamp(key, 52, None);
    Order {
        id: format!("ord-{user_id}-{seq}"),
        user_id,
        status: status as i32,
        items,
        total: Some(money_eur(total)),
        shipping_address: Some(address_for(user_id)),
        updated_at: Some(timestamp(key, 53, Some(&created_at))),
        created_at: Some(created_at),
    }
}

/// `GetOrder`: the order with id `ord-<user>-<seq>`, or not found.
pub fn order(id: &str) -> Result<Order, DataError> {
    let (user_id, seq) = parse_order_id(id).ok_or_else(|| {
        DataError::NotFound(format!(
            "order {id:?} not found (ids look like ord-<user 1..={MAX_ID}>-<1..={ORDERS_PER_USER}>)"
        ))
    })?;
    Ok(order_unchecked(user_id, seq))
}

/// `ListOrders`: a user's orders, newest (highest sequence) first.
pub fn list_orders(req: &ListOrdersRequest) -> Result<ListOrdersResponse, DataError> {
    if req.user_id == 0 {
        return Err(DataError::InvalidArgument("user_id is required".into()));
    }
    check_id("user", req.user_id)?;
    let size = page_size(req.page_size, 20, 20, "page_size")? as i64;
    Ok(ListOrdersResponse {
        orders: (0..size)
            .map(|k| order_unchecked(req.user_id, ORDERS_PER_USER - k))
            .collect(),
    })
}

// ===== inventory =====

const WAREHOUSES: [(&str, &str); 3] = [
    ("wh-fra-1", "eu-central"),
    ("wh-iad-1", "us-east"),
    ("wh-sin-1", "ap-southeast"),
];

/// `GetStock`: stock of product `product_id` in each warehouse.
pub fn stock(product_id: i64) -> Result<Stock, DataError> {
    check_id("product", product_id)?;
    let warehouses: Vec<WarehouseStock> = WAREHOUSES
        .iter()
        .enumerate()
        .map(|(k, (id, region))| {
            let roll = mix(product_id, 70 + k as u64);
            WarehouseStock {
                warehouse_id: id.to_string(),
                region: region.to_string(),
                available: if roll.is_multiple_of(7) {
                    0
                } else {
                    (roll % 200) as i32
                },
                reserved: (mix(product_id, 80 + k as u64) % 20) as i32,
            }
        })
        .collect();
    let total: i32 = warehouses.iter().map(|w| w.available).sum();
    Ok(Stock {
        product_id,
        warehouses,
        total_available: total,
        status: stock_status(total) as i32,
        updated_at: Some(timestamp(product_id, 90, None)),
    })
}

fn stock_status(total: i32) -> StockStatus {
    match total {
        0 => StockStatus::OutOfStock,
        t if t < 20 => StockStatus::Low,
        _ => StockStatus::InStock,
    }
}

/// `WatchStock`'s update number `n` (from 0) of `stock`: the same product, a deterministic
/// movement in its first warehouse, timestamped `n` seconds after the stock's own time.
pub fn stock_after(stock: &Stock, n: u32) -> Stock {
    let mut next = stock.clone();
    let delta = (mix(stock.product_id, 100 + u64::from(n)) % 11) as i32 - 5;
    if let Some(first) = next.warehouses.first_mut() {
        first.available = first.available.saturating_add(delta).max(0);
    }
    next.total_available = next.warehouses.iter().map(|w| w.available).sum();
    next.status = stock_status(next.total_available) as i32;
    if let Some(t) = &mut next.updated_at {
        t.seconds = t.seconds.saturating_add(i64::from(n));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_data_and_bounds() {
        assert_eq!(user(42).unwrap(), user(42).unwrap());
        assert_ne!(user(42).unwrap(), user(43).unwrap());
        assert!(matches!(user(0), Err(DataError::NotFound(_))));
        assert!(matches!(user(MAX_ID + 1), Err(DataError::NotFound(_))));
        assert!(user(MAX_ID).is_ok());
        assert!(matches!(product(-1), Err(DataError::NotFound(_))));
        assert!(matches!(stock(0), Err(DataError::NotFound(_))));
    }

    #[test]
    fn orders_are_consistent_with_their_user_and_products() {
        let o = order("ord-42-7").unwrap();
        assert_eq!(o.user_id, 42);
        assert_eq!(o.shipping_address, user(42).unwrap().address);
        for item in &o.items {
            let p = product(item.product_id).unwrap();
            assert_eq!(item.name, p.name);
            assert_eq!(item.unit_price, p.price);
        }
        let list = list_orders(&ListOrdersRequest {
            user_id: 42,
            page_size: 0,
        })
        .unwrap();
        assert_eq!(list.orders.len(), 20);
        assert!(list.orders.contains(&o));
        for bad in ["ord-42-21", "ord-0-1", "42", "ord-42", "ord-x-1"] {
            assert!(matches!(order(bad), Err(DataError::NotFound(_))), "{bad}");
        }
    }

    #[test]
    fn list_users_pages_through_the_end() {
        let page = list_users(&ListUsersRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .unwrap();
        assert_eq!(
            page.users.iter().map(|u| u.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(page.next_page_token, "4");
        let last = list_users(&ListUsersRequest {
            page_size: 500,
            page_token: (MAX_ID - 1).to_string(),
        })
        .unwrap();
        assert_eq!(last.users.len(), 2);
        assert!(last.next_page_token.is_empty());
        assert!(
            list_users(&ListUsersRequest {
                page_size: -1,
                page_token: String::new()
            })
            .is_err()
        );
        assert!(
            list_users(&ListUsersRequest {
                page_size: 1,
                page_token: "x".into()
            })
            .is_err()
        );
    }

    #[test]
    fn search_finds_only_matching_names() {
        let res = search_products(&SearchProductsRequest {
            q: "KETTLE".into(),
            limit: 5,
        })
        .unwrap();
        assert_eq!(res.products.len(), 5);
        assert!(res.products.iter().all(|p| p.name.ends_with("Kettle")));
        let none = search_products(&SearchProductsRequest {
            q: "zzz".into(),
            limit: 5,
        })
        .unwrap();
        assert!(none.products.is_empty());
        assert!(
            search_products(&SearchProductsRequest {
                q: " ".into(),
                limit: 5
            })
            .is_err()
        );
    }

    #[test]
    fn create_user_validates() {
        let ok = create_user(CreateUserRequest {
            username: "ada".into(),
            email: "ada@example.com".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(ok.id > MAX_ID);
        assert!(
            create_user(CreateUserRequest {
                username: "ada".into(),
                ..Default::default()
            })
            .is_err()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Every value a client sends reaches these functions (REST path and query, gRPC
        /// fields): any of them gives an answer or a named error, never a panic.
        #[test]
        fn any_client_value_is_an_answer_or_an_error(
            id in proptest::prelude::any::<i64>(),
            size in proptest::prelude::any::<i32>(),
            text in ".{0,40}",
            order_id in "(ord-)?-?[0-9]{0,20}(-?-[0-9]{0,20})?",
        ) {
            let _ = user(id);
            let _ = product(id);
            let _ = stock(id);
            let _ = order(&order_id);
            let _ = order(&text);
            let _ = list_users(&ListUsersRequest { page_size: size, page_token: text.clone() });
            let _ = list_users(&ListUsersRequest { page_size: size, page_token: id.to_string() });
            let _ = list_orders(&ListOrdersRequest { user_id: id, page_size: size });
            let _ = search_products(&SearchProductsRequest { q: text.clone(), limit: size });
            let _ = create_user(CreateUserRequest {
                username: text.clone(),
                email: format!("{text}@x"),
                ..Default::default()
            });
        }
    }
}
